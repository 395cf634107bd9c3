"""search/duplicates.py on synthetic vectors: exact and near groups, the keep policy, the threshold rules, and the
same groups whatever the batch size or search kind (real FAISS, real scipy)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from imgidx.indexer.errors import ConfigError
from imgidx.indexer.licenses import LICENSES, PERMISSIVENESS, license_rank
from imgidx.search.duplicates import PhotoFacts, find_duplicates, upload_time
from imgidx.search.pixels import SAME, similarity, thumbnail, verifier


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def scene(n: int, dim: int = 64, seed: int = 0) -> np.ndarray:
    """n distinct 'photos': non-negative like pooled ReLU features, so unrelated photos still have cos ~0.75."""
    return unit(np.abs(np.random.default_rng(seed).normal(size=(n, dim))))


def nudge(v: np.ndarray, distance: float, seed: int) -> np.ndarray:
    """A unit vector at about `distance` (1 - cos) from v."""
    r = np.random.default_rng(seed).normal(size=v.shape)
    r -= (r @ v) * v
    r = unit(r)
    angle = np.arccos(1 - distance)
    return unit(np.cos(angle) * v + np.sin(angle) * r)


def facts(n: int, **kw) -> list[PhotoFacts]:
    return [PhotoFacts(id=100 + i, **{k: v[i] for k, v in kw.items()}) for i in range(n)]


def test_near_copies_group_and_similar_photos_stay_apart():
    base = scene(50)
    copies = np.stack([nudge(base[3], 0.01, 1), nudge(base[3], 0.02, 2), nudge(base[7], 0.015, 3)])
    burst = nudge(base[20], 0.12, 4)  # another shot of the same scene: similar, not the same picture
    v = np.concatenate([base, copies, burst[None]])
    result = find_duplicates(v, facts(len(v)), threshold=0.05)
    groups = sorted(sorted(g.ids) for g in result.groups)
    assert groups == [[103, 150, 151], [107, 152]]
    assert all(g.kind == "near" for g in result.groups)
    assert result.threshold == 0.05 and result.rule == "given" and result.search == "flat"
    big = next(g for g in result.groups if 150 in g.ids)
    assert 0.02 <= big.max_distance <= 0.05  # the two copies are further from each other than from the original
    assert result.dropped == {150, 151, 152} | {103, 107} - {g.keep for g in result.groups}


def test_exact_by_bytes_or_pixels_and_near_on_top():
    base = scene(10)
    v = np.concatenate([base, base[[2, 2, 5]], nudge(base[5], 0.01, 0)[None]])
    # rows 10, 11 are byte copies of 2; row 12 has other bytes but the same pixels as 5; row 13 is a near copy of 5
    pixels = [None] * 14
    pixels[5] = pixels[12] = "p5"
    f = facts(14, sha256=[f"s{i}" for i in range(10)] + ["s2", "s2", "s12", "s13"], pixels_sha256=pixels)
    result = find_duplicates(v, f, threshold=0.05)
    by_keep = {frozenset(g.ids): g for g in result.groups}
    exact = by_keep[frozenset({102, 110, 111})]
    assert exact.kind == "exact" and exact.max_distance == 0.0
    # 105 and 112 share pixels (exact) and 113 is a near copy of them: one group, kind near
    assert by_keep[frozenset({105, 112, 113})].kind == "near"
    assert [g.kind for g in result.groups] == ["exact", "near"]  # exact groups first


def test_exact_bytes_found_even_when_vectors_differ():
    # the same bytes under two ids always group, whatever the vectors say (e.g. an index mixing two runs)
    v = scene(3)
    result = find_duplicates(v, facts(3, sha256=["a", "b", "a"]), threshold=0.01)
    assert [(g.kind, g.ids) for g in result.groups] == [("exact", (100, 102))]


def test_keep_policy_size_then_licence_then_upload_then_id():
    v = np.repeat(scene(1), 6, axis=0)
    f = [
        PhotoFacts(1, width=640, height=480, size_bytes=90_000, license=9, date_upload="1000"),
        PhotoFacts(2, width=1024, height=768, size_bytes=80_000, license=0, date_upload="3000"),  # most pixels
        PhotoFacts(3, width=1024, height=768, size_bytes=70_000, license=9, date_upload="1000"),
        PhotoFacts(4, width=1024, height=768, size_bytes=80_000, license=4, date_upload="2000"),  # licence beats 2
        PhotoFacts(5, width=1024, height=768, size_bytes=80_000, license=4, date_upload="2009-02-13T23:31:29Z"),
        PhotoFacts(6, width=1024, height=768, size_bytes=80_000, license=4, date_upload=""),
    ]
    g = find_duplicates(v, f, threshold=0.01).groups[0]
    # 4 and 5 tie on pixels, bytes and licence; 4 was uploaded at 2000 s, 5 at 1234567889 s, 6 unknown (last)
    assert g.ids == (4, 5, 6, 2, 3, 1) and g.keep == 4


def test_equal_facts_keep_the_lowest_id():
    v = np.repeat(scene(1), 3, axis=0)
    g = find_duplicates(v, [PhotoFacts(9), PhotoFacts(4), PhotoFacts(7)], threshold=0.01).groups[0]
    assert g.ids == (4, 7, 9)


def test_licence_order_is_total_and_cc0_first():
    assert sorted(PERMISSIVENESS) == sorted(LICENSES)
    assert license_rank(9) == 0 and license_rank(0) == len(PERMISSIVENESS) - 1
    assert license_rank(4) < license_rank(5) < license_rank(2) < license_rank(6) < license_rank(3)
    assert license_rank(11) < license_rank(4)  # 4.0 ahead of 2.0
    assert license_rank(None) == license_rank(99) == license_rank(0)


def test_groups_spanning_collections_are_reported():
    base = scene(5)
    v = np.concatenate([base, nudge(base[1], 0.01, 0)[None]])
    f = facts(6, collections=[("cat",), ("cat",), ("cat",), ("dog",), ("dog",), ("dog",)])
    (g,) = find_duplicates(v, f, threshold=0.05).groups
    assert g.collections == ("cat", "dog") and g.spans_collections
    assert g.as_dict()["collections"] == ["cat", "dog"]


def test_json_contract():
    base = scene(20)
    v = np.concatenate([base, nudge(base[0], 0.01, 0)[None]])
    d = json.loads(json.dumps(find_duplicates(v, facts(21), threshold=0.05).as_dict()))
    assert set(d) >= {"groups", "threshold"} and d["threshold"] == 0.05
    (g,) = d["groups"]
    assert g["kind"] == "near" and g["keep"] in g["ids"] and g["ids"][0] == g["keep"]
    assert sorted(g["ids"]) == [100, 120] and isinstance(g["max_distance"], float)


def test_auto_uses_the_calibrated_cut_for_a_known_model_else_the_nn_rule():
    base = scene(200, seed=3)
    v = np.concatenate([base, nudge(base[0], 0.01, 0)[None]])
    known = find_duplicates(v, facts(len(v)), model=("vgg16", "block5_pool"))
    assert known.rule.startswith("calibrated") and 0 < known.threshold < 0.2
    data = find_duplicates(v, facts(len(v)), model=("vgg16", "fc2"))
    assert data.rule.endswith("median nearest-neighbour distance")
    assert data.threshold == pytest.approx(0.2 * data.nn_median)
    assert [sorted(g.ids) for g in data.groups] == [[100, 300]]


def test_batches_and_small_k_give_the_same_groups():
    """A group larger than k still joins (chains of neighbours); the batch size changes nothing."""
    base = scene(300, seed=5)
    clump = np.stack([nudge(base[10], 0.004 * (1 + i % 5), 10 + i) for i in range(12)])
    v = np.concatenate([base, clump])
    one = find_duplicates(v, facts(len(v)), threshold=0.05)
    many = find_duplicates(v, facts(len(v)), threshold=0.05, batch=7, k=4)
    assert [g.ids for g in one.groups] == [g.ids for g in many.groups]
    assert len(one.groups) == 1 and len(one.groups[0].ids) == 13


@pytest.mark.parametrize("n", [1, 5, 300, 2100])
def test_flat_search_equals_an_index_flat_ip_bit_for_bit(n):
    """The flat path (faiss.knn on the vectors, no index copy) returns what IndexFlatIP.add + search returned:
    the same neighbours in the same order and the same float32 scores, ties included (identical rows, rows
    repeated beyond k, float16-rounded vectors as the store keeps them), batch by batch as _near_pairs asks."""
    import faiss

    from imgidx.search.duplicates import BATCH, K, _index

    rng = np.random.default_rng(n)
    v = unit(np.abs(rng.normal(size=(n, 256)))).astype(np.float16).astype(np.float32)
    if n > 5:
        v[1::7] = v[0]  # many copies of one row: more tied neighbours than k
        v[3:6] = v[2]
    reference = faiss.IndexFlatIP(v.shape[1])
    reference.add(v)
    flat, how = _index(v, "auto")
    assert how == "flat"
    for start in range(0, n, BATCH):
        q = v[start : start + BATCH]
        for k in {1, min(K + 1, n), n}:
            got, want = flat.search(q, k), reference.search(q, k)
            assert np.array_equal(got[1], want[1]) and got[0].tobytes() == want[0].tobytes()


def exact_units(n: int, seed: int, dim: int = 16) -> np.ndarray:
    """n unit rows of four 0.5s each: every inner product is a multiple of 0.25, exact in float32 whatever the
    summation order, so any two ways of computing them agree bit for bit and ties are real ties. Most rows are
    copies (a few hundred distinct rows), some repeated beyond k."""
    rng = np.random.default_rng(seed)
    v = np.zeros((n, dim), np.float32)
    for row in v:
        row[rng.choice(dim, 4, replace=False)] = 0.5
    if n > 5:
        v[1::9] = v[0]
    return v


@pytest.mark.parametrize("n", [2, 3, 5, 19, 20, 21, 300, 1500])
def test_self_knn_equals_faiss_knn_ties_included(n):
    """The triangle path (bands of v v^T by syrk and sgemm, faiss's heap) keeps what faiss.knn keeps, in its
    order: the same neighbours, ties at the k-th place broken alike, the row itself where faiss puts it (exact
    products here, so scores agree to the bit too), in one band or many; a NaN row ends up as faiss.knn leaves
    it."""
    import faiss

    from imgidx.search.duplicates import K, _self_knn

    v = exact_units(n, seed=n)
    if n >= 20:
        v[7] = np.nan
    for kk in sorted({1, min(K + 1, n), min(n, 99)}):
        want = faiss.knn(v, v, kk, metric=faiss.METRIC_INNER_PRODUCT)
        for band_rows in {1, 7, max(1, n // 3), n}:
            got = _self_knn(v, kk, block_bytes=4 * n * band_rows)
            assert np.array_equal(got[1], want[1]) and got[0].tobytes() == want[0].tobytes(), (kk, band_rows)


@pytest.mark.parametrize("n", [2, 40, 1000])
def test_near_pairs_from_the_triangle_equal_the_batched_search(n):
    """_near_pairs gives the same pairs, distances and nearest-neighbour distances from the similarity matrix's
    upper triangle as from faiss.knn batch by batch (self_max=0, the search it replaces), copies beyond k
    included."""
    from imgidx.search.duplicates import K, _near_pairs

    v = exact_units(n, seed=n)
    for bound in (0.0, 0.25, 0.5, 2.0):
        whole = _near_pairs(v, bound, k=K, batch=64, search="auto")
        batched = _near_pairs(v, bound, k=K, batch=64, search="auto", self_max=0)
        assert whole[3] == batched[3] == "flat"
        for a, b in zip(whole[:3], batched[:3], strict=True):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


def test_triangle_and_batched_search_find_the_same_copies_on_real_valued_vectors():
    """On float16-rounded unit vectors (as the store keeps them) the scores may differ in the last bit (another
    BLAS call), nothing more: the same planted copies, nearest-neighbour distances within float32 rounding."""
    from imgidx.search.duplicates import _near_pairs

    base = scene(1200, dim=256, seed=8)
    copies = np.stack([nudge(base[i], 0.005 * (1 + i % 3), i) for i in range(0, 1200, 40)])
    v = np.concatenate([base, copies, base[[5, 5, 9]]]).astype(np.float16).astype(np.float32)
    whole = _near_pairs(v, 0.03, k=16, batch=256, search="flat")
    batched = _near_pairs(v, 0.03, k=16, batch=256, search="flat", self_max=0)
    assert np.array_equal(whole[0], batched[0]) and len(whole[0]) >= 2 * (30 + 3)
    np.testing.assert_allclose(whole[1], batched[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole[2], batched[2], rtol=0, atol=1e-6)


def test_components_are_the_groups_of_two_or_more_in_order():
    from imgidx.search.duplicates import _components

    rng = np.random.default_rng(0)
    for n, m in [(1, 0), (2, 0), (2, 1), (50, 0), (50, 10), (300, 200), (300, 600)]:
        edges = rng.integers(0, n, size=(m, 2)).astype(np.int64)
        parent = list(range(n))

        def root(i, parent=parent):
            while parent[i] != i:
                i = parent[i]
            return i

        for i, j in edges.tolist():
            parent[root(i)] = root(j)
        members: dict[int, list[int]] = {}
        for i in range(n):
            members.setdefault(root(i), []).append(i)
        want = sorted((g for g in members.values() if len(g) > 1), key=lambda g: g[0])
        assert _components(n, edges) == want


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 4000, 4001])
def test_median_equals_numpy_bit_for_bit(n):
    from imgidx.search.duplicates import median

    rng = np.random.default_rng(n)
    for x in (
        rng.random(n, dtype=np.float32),
        rng.integers(0, 3, n).astype(np.float32),  # ties
        (rng.random(n) * 1e-3).astype(np.float32) + np.float32(0.1456),
    ):
        assert np.float64(median(x)).tobytes() == np.float64(float(np.median(x))).tobytes()


def test_ivf_search_finds_the_planted_copies():
    base = scene(3000, seed=6)
    copies = np.stack([nudge(base[i], 0.01, i) for i in range(0, 3000, 100)])
    v = np.concatenate([base, copies])
    flat = find_duplicates(v, facts(len(v)), threshold=0.03, search="flat")
    ivf = find_duplicates(v, facts(len(v)), threshold=0.03, search="ivf")
    assert ivf.search.startswith("ivf:") and flat.search == "flat"
    assert [g.ids for g in ivf.groups] == [g.ids for g in flat.groups]
    assert len(flat.groups) == 30


def test_nothing_to_group():
    assert find_duplicates(scene(1), facts(1)).groups == ()
    assert find_duplicates(np.empty((0, 8), np.float32), []).groups == ()
    assert find_duplicates(scene(40), facts(40), threshold=0.01).groups == ()


@pytest.mark.parametrize("bad", ["-0.1", "3", "nan", "loose", -1.0])
def test_bad_thresholds(bad):
    with pytest.raises(ConfigError, match="threshold"):
        find_duplicates(scene(3), facts(3), threshold=bad)


def test_vectors_and_facts_must_align():
    with pytest.raises(ConfigError):
        find_duplicates(scene(3), facts(2))


def test_upload_time():
    assert upload_time("1234567890") == 1234567890.0
    assert upload_time("2009-02-13T23:31:30Z") == 1234567890.0
    assert upload_time("") == upload_time("garbage") == float("inf")


# ---- the pixel check (search/pixels.py) ----------------------------------------------------------------------------
def texture(seed: int, w: int = 320, h: int = 240) -> Image.Image:
    """A photo-like picture: smooth blobs plus fine grain (pure noise would not survive resizing)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    grain = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(img) + grain, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def edits(img: Image.Image) -> dict[str, bytes]:
    w, h = img.size
    marked = img.copy()
    ImageDraw.Draw(marked).text((8, 8), "(c) somebody", fill=(255, 255, 255))
    return {
        "jpeg40": jpeg(img, 40),
        "resize60": jpeg(img.resize((w * 6 // 10, h * 6 // 10))),
        "crop85": jpeg(img.crop((30, 10, 30 + w * 85 // 100, 10 + h * 85 // 100)).resize((w, h))),
        "watermark": jpeg(marked),
        "colour": jpeg(ImageEnhance.Brightness(ImageEnhance.Color(img).enhance(1.3)).enhance(1.1)),
    }


def test_pixels_align_edits_and_not_other_pictures_or_mirrors():
    original = texture(1)
    base = thumbnail(jpeg(original))
    for kind, data in edits(original).items():
        assert similarity(base, thumbnail(data)) >= SAME, kind
    assert similarity(base, thumbnail(jpeg(texture(2)))) < SAME
    assert similarity(base, thumbnail(jpeg(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))) < SAME


def test_verifier_decides_the_band_between_the_cut_and_three_times_it():
    """Vectors at 0.08 from an original: grouped only when the pixels say it is the same picture."""
    pictures = [texture(10), texture(11), texture(12)]
    files = [jpeg(p) for p in pictures] + [edits(pictures[0])["crop85"], jpeg(texture(13))]
    base = scene(3, seed=9)
    v = np.concatenate([base, nudge(base[0], 0.08, 1)[None], nudge(base[1], 0.08, 2)[None]])
    f = facts(5)
    plain = find_duplicates(v, f, threshold=0.05)
    assert plain.groups == () and plain.verified_up_to is None
    checked = find_duplicates(v, f, threshold=0.05, verify=verifier(lambda row: files[row]))
    assert [g.ids for g in checked.groups] == [(100, 103)]  # the crop; the look-alike (104 vs 101) stays apart
    assert checked.verified_pairs == 2 and checked.confirmed_pairs == 1
    assert checked.verified_up_to == pytest.approx(0.15) and checked.as_dict()["verified_pairs"] == 2
    tiny_cache = find_duplicates(v, f, threshold=0.05, verify=verifier(lambda row: files[row], cache=1))
    assert tiny_cache.groups == checked.groups  # a bounded thumbnail cache changes only the work, not the answer
    unreadable = find_duplicates(v, f, threshold=0.05, verify=verifier(lambda row: None))
    assert unreadable.groups == ()


def test_a_mirror_image_under_the_cut_is_kept_apart_by_the_pixel_check():
    """Pooled features barely move under a flip (0.02 here, as on block5_pool); the pixels do."""
    original = texture(30)
    files = [jpeg(original), jpeg(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), jpeg(texture(31))]
    base = scene(2, seed=4)
    v = np.stack([base[0], nudge(base[0], 0.02, 5), base[1]])
    assert [g.ids for g in find_duplicates(v, facts(3), threshold=0.05).groups] == [(100, 101)]
    checked = find_duplicates(v, facts(3), threshold=0.05, verify=verifier(lambda row: files[row]))
    assert checked.groups == () and checked.mirror_checked_pairs == 1 and checked.mirrored_pairs == 1


def stamped(img: Image.Image) -> dict[str, bytes]:
    """What repost sites add: an opaque text box, a logo, a frame (issue 22: such copies sit 0.0001-0.015 from the
    original on block5_pool, and the text box can pull the pixel correlation under SAME)."""
    w, h = img.size
    box = img.copy()
    draw = ImageDraw.Draw(box)
    draw.rectangle((0, h * 55 // 100, w * 3 // 4, h), fill=(15, 15, 15))
    draw.text((10, h * 60 // 100), "reposted by photo-site.example", fill=(255, 255, 255))
    logo = img.convert("RGBA")
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).ellipse((w - 90, h - 90, w - 10, h - 10), outline=(255, 255, 255, 200), width=8)
    logo = Image.alpha_composite(logo, layer).convert("RGB")
    framed = Image.new("RGB", (w + 40, h + 40), (255, 255, 255))
    framed.paste(img, (20, 20))
    return {"textbox": jpeg(box), "logo": jpeg(logo), "border": jpeg(framed.resize((w, h)))}


def test_stamped_copies_under_the_cut_group_whatever_the_pixels_say_and_crops_by_the_pixels():
    """Under the cut the vectors decide (only a mirror image is kept apart); between the cut and 3x the cut the
    pixels do: crops join, a look-alike does not."""
    original = texture(40)
    w, h = original.size
    marks = stamped(original)
    crops = {
        "crop80": jpeg(original.crop((w // 10, 0, w // 10 + w * 8 // 10, h * 8 // 10))),
        "crop85": edits(original)["crop85"],
    }
    files = [jpeg(original), *marks.values(), *crops.values(), jpeg(texture(41)), jpeg(texture(42))]
    base = scene(3, seed=12)
    v = np.stack(
        [
            base[0],
            nudge(base[0], 0.002, 1),  # textbox
            nudge(base[0], 0.01, 2),  # logo
            nudge(base[0], 0.015, 3),  # border
            nudge(base[0], 0.09, 4),  # crop80
            nudge(base[0], 0.12, 5),  # crop85
            nudge(base[0], 0.08, 6),  # another picture of the same kind: similar vector, other pixels
            base[1],
        ]
    )
    thumbs = [thumbnail(f) for f in files]
    # the stamp this test is about: the pixel comparison alone would reject it
    assert similarity(thumbs[0], thumbs[1]) < SAME
    assert all(similarity(thumbs[0], thumbs[i]) >= SAME for i in (4, 5))  # the crops align
    assert similarity(thumbs[0], thumbs[6]) < SAME
    checked = find_duplicates(v, facts(8), threshold=0.05, verify=verifier(lambda row: files[row]))
    assert [sorted(g.ids) for g in checked.groups] == [[100, 101, 102, 103, 104, 105]]
    assert checked.mirror_checked_pairs >= 3 and checked.mirrored_pairs == 0
    assert checked.confirmed_pairs >= 2 and checked.verified_pairs > checked.confirmed_pairs
    vectors_only = find_duplicates(v, facts(8), threshold=0.05)
    assert [sorted(g.ids) for g in vectors_only.groups] == [[100, 101, 102, 103]]  # no crop without the pixels
