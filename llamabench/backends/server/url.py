"""The name of the engine that runs a served model (``--engine server``); light to import (the registry reads it).
What a server URL is, and how it is shown without credentials: ``llamabench/urls.py``."""

NAME = "server"  # --engine server
