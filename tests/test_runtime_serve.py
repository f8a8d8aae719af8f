"""The policy server: chunks equal the policy's own, batching changes nothing, an independent client written from
the protocol spec gets them, garbage from a client gets error replies and never stops the server."""

import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from s2policy.runtime import ChunkStream, ControlLoop, PolicyRunner, RemotePolicy, SafetyConfig
from s2policy.runtime.service import ChunkRequest

from .serve_support import RawClient, from_wire, running_server, tiny_service, wire_array
from .test_runtime_support import ACTION_DIM, PROPRIO_DIM, FakeRobot, observation, write_tiny_checkpoint


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Servers and loops share this 2-core machine: one torch thread each."""


@pytest.fixture(scope="module")
def mlp_ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("mlp") / "p.safetensors")


def test_mlp_chunk_is_policy_act(mlp_ckpt):
    service = tiny_service(mlp_ckpt)
    runner = PolicyRunner.from_checkpoint(mlp_ckpt, device="cpu", warmup_steps=0)
    rng = np.random.default_rng(1)
    session = service.session()
    for _ in range(3):
        obs = observation(rng)
        (result,) = service.infer([ChunkRequest(session, service.spec.check_observation(obs))])
        assert result.actions.shape == (1, ACTION_DIM) and result.batch == 1
        np.testing.assert_allclose(result.actions[0], runner.act(obs), rtol=0, atol=1e-6)


def test_transformer_chunks_are_the_policys_plans(tmp_path):
    """With temporal ensembling Policy.act plans a chunk every step; the service, told the executed action as
    prev_action, must plan the same chunks from the same history."""
    ckpt = write_tiny_checkpoint(tmp_path / "t.safetensors", head="transformer", execution="ensemble")
    service = tiny_service(ckpt)
    policy = PolicyRunner.from_checkpoint(ckpt, device="cpu", warmup_steps=0).policy
    planned = []
    add = policy.executor.add_chunk
    policy.executor.add_chunk = lambda i, c: (planned.append(c.copy()), add(i, c))
    rng = np.random.default_rng(2)
    session, prev = service.session(), None
    for step in range(6):  # more steps than the history (4): the window slides
        obs = observation(rng)
        (result,) = service.infer([ChunkRequest(session, service.spec.check_observation(obs), 0, prev)])
        prev = policy.act(obs)
        assert result.actions.shape == (4, ACTION_DIM)
        np.testing.assert_allclose(result.actions, planned[step], rtol=0, atol=1e-5)


def test_a_batch_gives_each_session_its_own_answer(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "t.safetensors", head="transformer")
    service = tiny_service(ckpt)
    rng = np.random.default_rng(3)
    obs = [[service.spec.check_observation(observation(rng)) for _ in range(3)] for _ in range(3)]
    alone = [[service.infer([ChunkRequest(s, o)])[0].actions for o in seq] for s, seq in
             zip([service.session() for _ in obs], obs)]
    sessions = [service.session() for _ in obs]
    for t in range(3):
        results = service.infer([ChunkRequest(s, seq[t]) for s, seq in zip(sessions, obs)])
        for k in range(3):
            assert results[k].batch == 3
            np.testing.assert_allclose(results[k].actions, alone[k][t], rtol=0, atol=1e-5)


def test_independent_client_and_health_check(mlp_ckpt):
    service = tiny_service(mlp_ckpt)
    runner = PolicyRunner.from_checkpoint(mlp_ckpt, device="cpu", warmup_steps=0)
    rng = np.random.default_rng(4)
    with running_server(service) as server:
        client = RawClient(server.port)
        hello = client.hello
        assert hello["v"] == 1 and hello["type"] == "hello" and hello["server"].startswith("s2policy/")
        spec = hello["policy"]
        assert spec["cameras"] == ["agentview"] and spec["proprio_keys"] == ["proprio"]
        assert (spec["proprio_dim"], spec["action_dim"], spec["horizon"]) == (PROPRIO_DIM, ACTION_DIM, 1)
        for rid in (7, 8):
            obs = observation(rng, frame_shape=(40, 56))  # any frame size
            reply = client.infer(rid, obs["agentview"], obs["proprio"].astype(np.float64), episode=3)
            assert reply["type"] == "actions" and reply["id"] == rid and reply["v"] == 1
            actions = from_wire(reply["actions"])
            assert actions.dtype == np.float32 and actions.shape == (1, ACTION_DIM)
            np.testing.assert_allclose(actions[0], runner.act(obs), atol=1e-6)
            timing = reply["timing"]
            assert timing["batch"] == 1 and timing["server_ms"] >= timing["encode_ms"] > 0
            assert set(timing) == {"server_ms", "queue_ms", "preprocess_ms", "encode_ms", "head_ms", "batch"}
        client.close()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "application/json"
            health = json.loads(response.read())
        assert health["status"] == "ok" and health["protocol"] == 1 and health["requests"] == 2


def test_client_garbage_gets_error_replies_and_the_server_keeps_serving(mlp_ckpt):
    rng = np.random.default_rng(5)
    obs = observation(rng)
    frame, proprio = wire_array(obs["agentview"]), wire_array(obs["proprio"])
    good = {"v": 1, "type": "infer", "id": 1, "observation": {"agentview": frame, "proprio": proprio}}
    bad_array = dict(frame, data=frame["data"][:-1])
    cases = [  # (message, expected code, expected id, a phrase of the message)
        ({**good, "v": 2}, "unsupported_version", 1, "protocol version 2"),
        ({**good, "type": "act"}, "bad_message", 1, "unknown message type 'act'"),
        ({**good, "id": "one"}, "bad_message", None, "'id' must be an integer"),
        ({**good, "observation": [1, 2]}, "bad_message", 1, "expected a map"),
        ({**good, "observation": {"proprio": proprio}}, "bad_observation", 1, "no 'agentview'"),
        ({**good, "observation": {"agentview": bad_array, "proprio": proprio}}, "bad_message", 1, "bytes of data"),
        ({**good, "observation": {"agentview": wire_array(np.zeros((8, 8), np.uint8)), "proprio": proprio}},
         "bad_observation", 1, "expected uint8 (H, W, 3)"),
        ({**good, "observation": {"agentview": wire_array(obs["agentview"].astype(np.float32)), "proprio": proprio}},
         "bad_observation", 1, "expected uint8"),
        ({**good, "observation": {"agentview": frame, "proprio": wire_array(np.zeros(4, np.float32))}},
         "bad_observation", 1, "has 4 values, the policy takes 5"),
        ({**good, "observation": {"agentview": frame, "proprio": wire_array(np.full(5, np.nan, np.float32))}},
         "bad_observation", 1, "5 non-finite values"),
        ({**good, "prev_action": wire_array(np.zeros(2, np.float32))}, "bad_message", 1, "'prev_action' must be"),
        ({**good, "episode": "x"}, "bad_message", 1, "'episode' must be an integer"),
        ({**good, "observation": {"agentview": {**frame, "dtype": "complex64"}, "proprio": proprio}},
         "bad_message", 1, "dtype 'complex64'"),
        ([1, 2, 3], "bad_message", None, "expected a map"),
    ]
    service = tiny_service(mlp_ckpt)
    with running_server(service) as server:
        client = RawClient(server.port)
        for message, code, rid, phrase in cases:
            client.send(message)
            reply = client.recv()
            assert (reply["type"], reply["code"], reply["id"]) == ("error", code, rid), (message, reply)
            assert phrase in reply["message"], reply["message"]
        client.ws.send(b"\xc1\x00garbage")  # not msgpack
        assert client.recv()["code"] == "bad_message"
        client.ws.send("a text frame")
        assert "text frame" in client.recv()["message"]
        reply = client.infer(99, obs["agentview"], obs["proprio"])
        assert reply["type"] == "actions" and np.isfinite(from_wire(reply["actions"])).all()
        # A message over the size limit: the transport closes that connection; the server goes on.
        client.ws.send(b"\x00" * (server.max_message_bytes + 1))
        with pytest.raises(Exception):
            client.recv(timeout=10)
        other = RawClient(server.port)
        assert other.infer(1, obs["agentview"], obs["proprio"])["type"] == "actions"
        other.close()
        assert server.stats["errors"] == len(cases) + 2


def test_a_policy_that_outputs_nan_never_sends_it(mlp_ckpt):
    service = tiny_service(mlp_ckpt)
    with torch.no_grad():
        service.policy.head.net[-1].bias.fill_(float("nan"))
    rng = np.random.default_rng(6)
    obs = observation(rng)
    with running_server(service) as server:
        client = RawClient(server.port)
        reply = client.infer(5, obs["agentview"], obs["proprio"])
        assert (reply["type"], reply["code"], reply["id"]) == ("error", "nonfinite_action", 5)
        client.close()


def test_concurrent_clients_are_batched(mlp_ckpt):
    service = tiny_service(mlp_ckpt)
    rng = np.random.default_rng(7)
    obs = [observation(rng) for _ in range(3)]
    expected = [service.infer([ChunkRequest(service.session(), service.spec.check_observation(o))])[0].actions
                for o in obs]
    replies = [None] * 3
    with running_server(service, batch_wait=0.2, max_batch=3) as server:
        clients = [RawClient(server.port) for _ in obs]
        barrier = threading.Barrier(3)

        def ask(k):
            barrier.wait()
            replies[k] = clients[k].infer(k, obs[k]["agentview"], obs[k]["proprio"])

        threads = [threading.Thread(target=ask, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
        assert server.stats["largest_batch"] >= 2
    assert max(r["timing"]["batch"] for r in replies) >= 2
    for k, reply in enumerate(replies):
        np.testing.assert_allclose(from_wire(reply["actions"]), expected[k], atol=1e-6)


def test_the_loop_through_the_server(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "t.safetensors", head="transformer")
    rng = np.random.default_rng(8)
    with running_server(tiny_service(ckpt)) as server:
        remote = RemotePolicy(f"ws://127.0.0.1:{server.port}")
        remote.wait_ready(30)
        robot = FakeRobot(make_obs=lambda i: observation(rng, episode=i // 20))
        report = ControlLoop(robot, ChunkStream(remote, blend_steps=1), hz=20,
                             safety=SafetyConfig(low=-1, high=1)).run(steps=30)
    assert report.ticks == 30 and report.inferences >= 5 and "ws://127.0.0.1" in report.mode
    assert report.safety_events.get("no_action_yet", 0) <= 5
    for stage in ("request", "network", "server_io", "queue", "encode", "head"):
        assert report.stage_ms[stage]["p50"] >= 0
    assert all(np.isfinite(a).all() and np.abs(a).max() <= 1 for a in robot.sent)
    assert remote.stats["replies"] == report.inferences and remote.stats["bad_replies"] == 0


BLOCK_TORCH = """
import runpy, sys
class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm"):
            raise ImportError(f"{name} is blocked: the robot client must run without it")
sys.meta_path.insert(0, BlockTorch())
module = sys.argv[1]
sys.argv = [module] + sys.argv[2:]
runpy.run_module(module, run_name="__main__")
"""


@pytest.mark.subprocess
def test_the_robot_client_runs_without_torch(mlp_ckpt, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with running_server(tiny_service(mlp_ckpt)) as server:
        out = tmp_path / "report.json"
        done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "s2policy.runtime.client", "--server",
                               f"ws://127.0.0.1:{server.port}", "--robot", "dummy", "--hz", "10", "--seconds", "1.5",
                               "--camera-size", "48", "--json", str(out)], env=env, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["inferences"] >= 3 and report["mode"].startswith("action chunks from ws://127.0.0.1")
    assert report["extra"]["replies"] == report["inferences"] and "cadence:" in done.stdout
    # The blocker does block: the server side cannot even be imported under it.
    blocked = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "s2policy.runtime.server", "--help"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert blocked.returncode != 0 and "torch is blocked" in blocked.stderr


def test_commands_fail_cleanly_on_bad_input(tmp_path, capsys):
    from s2policy.runtime import client, server

    assert server.main(["--checkpoint", str(tmp_path / "missing.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err
    assert server.main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--max-batch", "0"]) == 2
    assert "--max-batch and --max-connections must be >= 1" in capsys.readouterr().err
    assert server.main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--max-connections", "0"]) == 2
    assert "(got 8, 0, 0.0)" in capsys.readouterr().err
    # refused before the checkpoint is read (it is missing here); they failed with a traceback after loading it
    assert server.main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--port", "70000"]) == 2
    assert "--port must be 0-65535 (0: a free one), got 70000" in capsys.readouterr().err
    assert server.main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--threads", "-1"]) == 2
    assert "--threads must be >= 0 (0: the library's default), got -1" in capsys.readouterr().err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert client.main(["--server", f"ws://127.0.0.1:{port}", "--robot", "dummy", "--connect-timeout", "0.5"]) == 2
    assert f"no policy server answered at ws://127.0.0.1:{port} within 0.5 s" in capsys.readouterr().err


def test_exported_graphs_serve_the_same_chunks(tmp_path):
    pytest.importorskip("onnxruntime")
    from s2policy.policy import Policy
    from s2policy.runtime.export import ExportedPolicy, export_policy
    from s2policy.runtime.protocol import ProtocolError
    from s2policy.runtime.service import ExportedChunkService

    ckpt = write_tiny_checkpoint(tmp_path / "t.safetensors", head="transformer")
    export_policy(Policy.load(ckpt, device="cpu"), tmp_path / "exported", "onnx")
    exported, eager = ExportedChunkService(ExportedPolicy.load(tmp_path / "exported")), tiny_service(ckpt)
    assert exported.spec.frame_shapes == {"agentview": [64, 64]} and exported.spec.horizon == 4
    exported.warmup()
    rng = np.random.default_rng(9)
    sessions, prev = (exported.session(), eager.session()), None
    for step in range(6):  # past the history of 4
        inputs = exported.spec.check_observation(observation(rng, frame_shape=(64, 64)))
        (a,) = exported.infer([ChunkRequest(sessions[0], inputs, 0, prev)])
        (b,) = eager.infer([ChunkRequest(sessions[1], inputs, 0, prev)])
        assert a.times.encode > 0 and a.times.head > 0
        np.testing.assert_allclose(a.actions, b.actions, rtol=0, atol=1e-4)
        prev = a.actions[0]
    with pytest.raises(ProtocolError, match="this policy takes 64x64 frames, got 48x64"):
        exported.spec.check_observation(observation(rng))


def test_a_different_policy_after_reconnecting_is_refused(mlp_ckpt, tmp_path):
    import time

    from s2policy.runtime.client import ConnectionOptions

    other = write_tiny_checkpoint(tmp_path / "other.safetensors", proprio_dim=4)
    with running_server(tiny_service(mlp_ckpt)) as first:
        port = first.port
        remote = RemotePolicy(f"ws://127.0.0.1:{port}", ConnectionOptions(reconnect_min=0.05, reconnect_max=0.1))
        remote.wait_ready(30)
    try:
        with running_server(tiny_service(other), port=port) as second:
            time.sleep(1.0)  # several reconnection attempts
            assert second.stats["connections"] >= 2  # it kept trying ...
            assert not remote.available and remote.stats["connects"] == 1  # ... and refused every hello
            assert remote.spec.proprio_dim == PROPRIO_DIM
    finally:
        remote.close()
