"""Build engines: what runs fetch → decode → embed for a build. `local` (pipeline.ingest: threads and the model in
this process) and `ray` (ray_engine.ingest_ray: a Ray Data pipeline, on this machine or a cluster). Both hand
their results to the same commit step (pipeline.Committer), so an index does not know which engine built it."""

ENGINES = ("local", "ray")
