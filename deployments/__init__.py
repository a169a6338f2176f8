"""Prefect deployments of the pipeline, one per LLM/backbone combination, with corpus-rebuild
schedules; registered through the API (``python -m multicsr.deployments register``) or from
``prefect.yaml`` (``prefect deploy --all``). See docs/operations.md."""

from multicsr.deployments.specs import DEPLOYMENTS, PipelineDeployment, deployment_parameters, get_deployment

__all__ = ["DEPLOYMENTS", "PipelineDeployment", "deployment_parameters", "get_deployment"]
