"""multicsr: pipeline package (CLI, and the Prefect tasks/flows/deployments mapped under this namespace)."""
__version__ = "0.1.0"
