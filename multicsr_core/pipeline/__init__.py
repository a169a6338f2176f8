"""The application layer: the only code that maps a ``PipelineConfig`` to core calls.

One module per stage (``generate``, ``score``, ``curate``, ``train``, ``evaluate``), each with a
``<stage>_stage`` function (one whole stage, as its CLI command runs it) and, where a flow runs the
stage in shards, a ``<stage>_shard`` function; ``components`` builds models, scorers and API
clients from the config; ``preflight`` checks a command before it works, ``estimate`` counts what
the LLM stages will ask, ``export`` writes a corpus or model for other tools, ``inspection``
summarizes a corpus; ``results`` holds the typed results the stages hand the flow.

The CLI (``multicsr``) and the Prefect tasks call these modules; nothing here imports Prefect or
the CLI, and nothing below (the core rooms) imports this package. Modules are imported one by one
(nothing is re-exported here), so ``preflight`` stays light.
"""
