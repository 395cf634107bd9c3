"""The HTTP API and web page of `imgidx serve` (FastAPI). Thin: parse the request, ask the Service, answer JSON.

Errors are JSON `{"detail": "..."}` with a status that says whose fault it is: 400/404/413/415/422 for the
request, 409 for a classifier that does not fit the index, 503 when the service is busy or has no index yet.
The OpenAPI schema is at /openapi.json; the interactive /docs page is off because it loads scripts from a CDN.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from imgidx import ops
from imgidx._version import __version__
from imgidx.indexer.errors import ClassifierError, ImgidxError, InvalidArgument, NotFound, StampMismatch

from .batcher import Busy
from .guard import BodyLimit, CrossSiteGuard, RequestMetrics, TokenGuard
from .queries import Queries
from .service import BadRequest, Service, ServiceError, UnsupportedImage
from .thumbs import MAX_SIZE, MIN_SIZE, ThumbnailCache, ThumbnailError, media_type

STATIC = Path(__file__).with_name("static")
DEFAULT_MAX_UPLOAD = 20 * 2**20
MULTIPART_SLACK = 64 * 2**10  # multipart boundaries and headers around the file itself

_PHOTO_BODY = {
    "required": False,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "ids": {"type": "array", "items": {"type": "integer"}},
                    "collection": {"type": "string"},
                    "k": {"type": "integer"},
                    "include_flagged": {"type": "boolean"},
                },
            }
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


def create_app(service: Service, *, token: str | None = None, max_upload: int = DEFAULT_MAX_UPLOAD) -> FastAPI:
    if max_upload <= 0:
        raise ValueError(f"max_upload must be > 0; received {max_upload}")
    queries = Queries(service.options.max_k)
    thumbs = ThumbnailCache()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        yield
        service.close()

    app = FastAPI(
        title="imgidx",
        version=__version__,
        summary="Nearest photos, clean rankings and classifier predictions from an imgidx index.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _errors(app)

    async def read_body(request: Request) -> tuple[bytes | None, dict[str, Any]]:
        """A photo (multipart field `file`, or a raw image body) or JSON fields."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=20)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise BadRequest('multipart requests carry the photo in the field "file"')
            data = await upload.read()
            if len(data) > max_upload:
                raise _TooLarge(len(data), max_upload)
            return data, {k: v for k, v in form.items() if isinstance(v, str)}
        if ctype.startswith("image/") or ctype == "application/octet-stream":
            data = await request.body()
            if len(data) > max_upload:
                raise _TooLarge(len(data), max_upload)
            return data, {}
        if ctype == "application/json":
            try:
                body = await request.json()
            except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
                raise BadRequest("the JSON body cannot be parsed") from None
            if not isinstance(body, dict):
                raise BadRequest('the JSON body must be an object, e.g. {"id": 3}')
            return None, body
        raise UnsupportedImage(
            f"unsupported content type {ctype or 'none'!r}: send multipart/form-data with the photo in field "
            '"file", a raw image/* body, or JSON {"id": N}'
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @app.get("/healthz", summary="Liveness and what is served")
    async def healthz() -> dict:
        await service.store.run(_nothing)  # looks for a build's new commits (at most every --refresh seconds)
        stamp = service.stamp
        return {
            "status": "ok",
            "photos": service.stats["photos"],
            "collections": service.stats["collections"],
            "model": stamp.describe() if stamp else None,
            "model_loaded": service.model_loaded,
            "index_generation": service.store.generation,
        }

    @app.get("/metrics", summary="Prometheus metrics (text format)", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        await service.store.run(_nothing)
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post(
        "/similar", summary="Nearest photos to an uploaded photo or an id", openapi_extra={"requestBody": _PHOTO_BODY}
    )
    async def similar(
        request: Request,
        k: Annotated[int | None, Query(description="How many neighbours (default 10).")] = None,
        collection: Annotated[str | None, Query(description="Only this collection.")] = None,
        include_flagged: Annotated[bool, Query(description="Also photos that `clean --apply` flagged.")] = False,
    ) -> dict:
        data, fields = await read_body(request)
        k = _int(fields.get("k", k if k is not None else 10), "k")
        collection = fields.get("collection", collection) or None
        if collection is not None and not isinstance(collection, str):
            raise BadRequest('"collection" must be a string')
        flagged = _bool(fields.get("include_flagged", include_flagged))
        if data is not None:
            vec = await service.embed_bytes(data)
            hits = await service.store.run(queries.similar_to_vector, vec, k, collection, flagged)
            return {"query": {"upload_bytes": len(data)}, "k": k, "collection": collection, "hits": hits}
        if "id" not in fields:
            raise BadRequest('send a photo (multipart field "file" or an image/* body) or JSON {"id": N}')
        photo_id = _int(fields["id"], "id")
        hits = await service.store.run(queries.similar_to_id, photo_id, k, collection, flagged)
        return {"query": {"id": photo_id}, "k": k, "collection": collection, "hits": hits}

    @app.get("/photos/{photo_id}", summary="A photo's metadata and attribution")
    async def photo(photo_id: int) -> dict:
        return await service.store.run(queries.photo, _stored_id(photo_id))

    @app.get(
        "/photos/{photo_id}/image",
        summary="The photo file, or a JPEG thumbnail with ?size=N",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}},
    )
    async def photo_image(
        photo_id: int,
        size: Annotated[int | None, Query(ge=MIN_SIZE, le=MAX_SIZE, description="Longest side in px.")] = None,
    ) -> Response:
        path = await service.store.run(queries.photo_file, _stored_id(photo_id))
        headers = {"cache-control": "private, max-age=3600"}
        try:
            if size is None:
                return FileResponse(path, media_type=await run_in_threadpool(media_type, path), headers=headers)
            data = await run_in_threadpool(thumbs.get, photo_id, path, size)
        except ThumbnailError as e:
            return JSONResponse({"detail": f"photo {photo_id} cannot be shown: {e}"}, status_code=404)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/collections", summary="Collections with their photo and flagged counts")
    async def collections() -> dict:
        return {"collections": await service.store.run(queries.collections)}

    @app.get("/collections/{name}/clean", summary="A collection ranked from typical to outlier")
    async def clean(
        name: str,
        iterations: Annotated[int, Query(ge=1, le=100)] = 5,
        drop: Annotated[int | None, Query(ge=0, description="Flag exactly the N farthest (the seed's rule).")] = None,
        threshold: Annotated[float | None, Query(ge=0, description="Flag distances above this.")] = None,
        k_mad: Annotated[float, Query(gt=0, description="Automatic cut: median + k_mad * MAD.")] = 3.0,
    ) -> dict:
        options = {"iterations": iterations, "drop": drop, "threshold": "auto" if threshold is None else threshold}
        options["k_mad"] = k_mad
        return await service.store.run(
            lambda store: queries.clean(
                store, (service.store.vectors_generation, service.store.generation), name, options
            )
        )

    @app.get("/collections/{name}/next", summary="The photos whose review would teach the clean cut most")
    async def review_next(name: str, n: Annotated[int, Query(ge=1, le=100)] = 10) -> dict:
        return await service.store.run(
            lambda store: queries.review_next(store, service.store.vectors_generation, name, n)
        )

    # ---- review: a person's decisions on flags (the only writes of the service) ----------------------------
    async def review_fields(request: Request) -> dict[str, Any]:
        _, fields = await read_body(request)  # CrossSiteGuard has already required JSON
        name = fields.get("collection")
        if not isinstance(name, str) or not name:
            raise BadRequest('"collection" must be a collection\'s name')
        return fields

    @app.post("/reviews", summary="Accept (flag) or overrule (keep) a photo's flag in a collection")
    async def post_review(request: Request) -> dict:
        fields = await review_fields(request)
        photo_id = _int(fields.get("id"), "id")
        decision, source = fields.get("decision"), fields.get("source", "clean")
        # with a token, the token's holder is who decided; without one (loopback), the name the page asked for
        reviewer = "token" if token is not None else (fields.get("reviewer") or "anonymous")
        if not all(isinstance(v, str) for v in (decision, source, reviewer)):
            raise BadRequest('"decision", "source" and "reviewer" must be strings')
        done = await service.writer.run(
            lambda store: _review_answer(
                store,
                fields["collection"],
                photo_id,
                ops.review(store, fields["collection"], photo_id, decision, reviewer=reviewer, source=source),
            )
        )
        return done

    @app.post("/reviews/undo", summary="Withdraw the newest decision on a photo")
    async def undo_review(request: Request) -> dict:
        fields = await review_fields(request)
        photo_id = _int(fields.get("id"), "id")
        name = fields["collection"]
        return await service.writer.run(
            lambda store: _review_answer(store, name, photo_id, ops.undo_review(store, name, photo_id))
        )

    @app.get("/collections/{name}/reviews", summary="The decisions people made on a collection's flags")
    async def collection_reviews(name: str, history: bool = False) -> dict:
        def answer(store) -> dict:
            rows = ops.reviews(store, name, history=history)
            flags = store.effective_flags(name)
            return {
                "collection": name,
                "reviews": [r.as_dict() for r in rows],
                "flagged": sorted(pid for pid, f in flags.items() if f),
            }

        return await service.store.run(answer)

    @app.get("/collections/{name}/duplicates", summary="Groups of the same picture among a collection's photos")
    async def collection_duplicates(name: str) -> dict:
        return await service.store.run(queries.duplicates, service.store.generation, name)

    @app.get("/collections/{name}/audit", summary="A collection's photos that look like another collection's")
    async def collection_audit(name: str, k: Annotated[int, Query(ge=1, le=100)] = 10) -> dict:
        return await service.store.run(queries.audit, service.store.generation, name, k)

    @app.get("/classifiers", summary="Saved classifiers ($IMGIDX_HOME/classifiers/*.joblib)")
    async def classifiers() -> dict:
        return {"classifiers": await service.store.run(queries.classifier_names)}

    @app.post("/classify/{model}", summary="A classifier's predictions", openapi_extra={"requestBody": _PHOTO_BODY})
    async def classify(model: str, request: Request) -> dict:
        data, fields = await read_body(request)
        if data is not None:
            await service.store.run(queries.classifier, model)  # a wrong name fails before the model runs
            vec = await service.embed_bytes(data)
            return await service.store.run(queries.classify_vector, model, vec)
        ids = [_int(fields["id"], "id")] if "id" in fields else fields.get("ids")
        if ids is not None and not isinstance(ids, list):
            raise BadRequest('"ids" must be a list of integers')
        ids = None if ids is None else [_int(i, "ids") for i in ids]
        collection = fields.get("collection")
        if collection is not None and not isinstance(collection, str):
            raise BadRequest('"collection" must be a string')
        return await service.store.run(queries.classify_stored, model, ids, collection)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # added inside out: metrics see every answer, including the guard's 401/403 and the cap's 413
    app.add_middleware(BodyLimit, max_bytes=max_upload + MULTIPART_SLACK)
    app.add_middleware(CrossSiteGuard, paths=WRITE_PATHS)  # inside the token guard: a token is checked first
    app.add_middleware(TokenGuard, token=token)
    app.add_middleware(RequestMetrics, metrics=service.metrics)
    return app


WRITE_PATHS = ("/reviews",)  # the routes that change the store: same-origin JSON only (guard.CrossSiteGuard)


def _review_answer(store, collection: str, photo_id: int, review) -> dict:
    """The decision that counts now (None: none is left, the automatic flag counts) and the photo's flag."""
    flagged = store.effective_flags(collection).get(photo_id, False)
    return {
        "collection": collection,
        "id": photo_id,
        "review": review.as_dict() if review else None,
        "flagged": flagged,
    }


class _TooLarge(ServiceError):
    status = 413

    def __init__(self, size: int, limit: int):
        super().__init__(f"the photo is {size / 2**20:.1f} MiB, more than the limit of {limit / 2**20:.1f} MiB")


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"retry-after": "1"})

    @app.exception_handler(ImgidxError)
    async def domain_error(request: Request, exc: ImgidxError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))


# the library's exceptions, by whose fault they are; anything else of the library's is the service's (503)
_STATUS: tuple[tuple[type[ImgidxError], int], ...] = (
    (NotFound, 404),
    (InvalidArgument, 400),
    (StampMismatch, 409),  # a classifier trained on other vectors
    (ClassifierError, 409),  # a classifier file that cannot be loaded
)


def status_of(exc: ImgidxError) -> int:
    return next((status for cls, status in _STATUS if isinstance(exc, cls)), 503)


def _nothing(store: object) -> None:
    return None


INT64 = 2**63 - 1  # SQLite's INTEGER range: a larger number cannot be an id, and would overflow the driver


def _int(value: object, name: str) -> int:
    """A JSON integer or a form field of digits, within SQLite's range. Floats (1e300, Infinity, NaN) and
    booleans are refused: int(Infinity) raises OverflowError, and int(2.5) would silently be 2."""
    if isinstance(value, str) and (v := value.strip()).isascii() and v.lstrip("+-").isdigit() and len(v) <= 24:
        value = int(v)
    if not isinstance(value, int) or isinstance(value, bool):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise BadRequest(f"{name} must be an integer; received {shown}")
    if not -INT64 <= value <= INT64:
        raise BadRequest(f"{name} is out of range (at most {INT64}); received {str(value)[:40]}")
    return value


def _stored_id(photo_id: int) -> int:
    """A photo id from a URL: beyond SQLite's range it cannot exist."""
    if not 0 <= photo_id <= INT64:
        raise NotFound(f"no photo with id {str(photo_id)[:40]}")
    return photo_id


def _bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
