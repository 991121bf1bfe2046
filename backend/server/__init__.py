"""The backend service that Blender drives: ``python -m backend serve``.

- ``main``: command-line entry; claims stdout for the protocol and configures logging.
- ``channel``: the protocol's byte streams (line reader with a size limit, locked writer).
- ``service``: request dispatch (reader thread) and the job queue (one worker thread).
- ``jobs``: protocol messages <-> pipeline requests and results; exceptions -> error codes.
- ``weights``: model resolution from Hugging Face or a local folder, gated-model checks.
- ``device``: what the machine offers (device, GPU memory), reported in ``hello``.

Nothing here imports torch at module level; the generator does, when it is loaded.
"""
