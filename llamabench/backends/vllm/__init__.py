"""The vLLM engine (``--engine vllm``); importing this package does not import vLLM."""
