"""A Ray replica that cannot load a served model whose URL carries ``user:password@``: the one-line error names the
server without the password. A module of its own, on its own one-slot local cluster, so no replica of another test
holds the slot its replica needs."""

from __future__ import annotations

import pytest

from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def address():
    context = ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def test_a_replica_that_cannot_load_a_server_url_keeps_its_password_out_of_the_error(address):
    """Nothing listens on port 9 of 127.0.0.1: the replica's load fails, and its error reaches the driver whole
    (not as a bare ActorDiedError holding a traceback with the URL in it)."""
    from llamabench.scale.ray_backend import RayBackend

    url = "http://someone:hunter2-secret@127.0.0.1:9/v1"
    with pytest.raises(LlamabenchError) as caught:
        RayBackend.start(RunConfig(tasks=["wmt_choice"], ray=address, model=[url]), url, replicas=1)
    message = str(caught.value)
    assert "hunter2-secret" not in message and "\n" not in message
    assert "127.0.0.1:9" in message and "applies to" not in message, message
