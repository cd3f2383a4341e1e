"""Triton's own HTTP client (tritonclient.http), unchanged, against
meridian-sidecar's KServe v2 REST listener.

Run by integration/tests/triton_clients.rs with:
  MERIDIAN_HTTP=host:port  MERIDIAN_MLP_DIMS=16,32,4  MERIDIAN_SEED=7
The `mlp` model there is configured by a Triton config.pbtxt (preferred
batch sizes 4 and 8, a 2000 us queue delay, two priority levels, two CPU
instances); the checks read those back from the model configuration.
References come from numpy and the seed alone (seeded.py).
"""
import json
import os
import threading
import unittest
import urllib.error
import urllib.request

import numpy as np
import seeded  # beside this script
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

URL = os.environ["MERIDIAN_HTTP"]
DIMS = [int(d) for d in os.environ["MERIDIAN_MLP_DIMS"].split(",")]
SEED = int(os.environ["MERIDIAN_SEED"])


def reference(x):
    return seeded.mlp(x, SEED, DIMS)


def infer(client, x, binary=True):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("output", binary_data=binary)
    return client.infer("mlp", [inp], outputs=[out]).as_numpy("output")


def post(path, body, headers=None):
    """A raw POST: (status, headers, parsed JSON body)."""
    request = urllib.request.Request(f"http://{URL}{path}", data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


class TritonHttpClient(unittest.TestCase):
    def setUp(self):
        self.client = httpclient.InferenceServerClient(URL)

    def tearDown(self):
        self.client.close()

    def test_liveness_and_readiness(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready("mlp"))
        self.assertTrue(self.client.is_model_ready("mlp", "1"))
        self.assertFalse(self.client.is_model_ready("no_such_model"))

    def test_metadata(self):
        meta = self.client.get_model_metadata("mlp")
        self.assertEqual(meta["name"], "mlp")
        self.assertEqual(meta["versions"], ["1"])
        self.assertEqual(meta["platform"], "onnxruntime_onnx")
        self.assertEqual(meta["inputs"], [{"name": "input", "datatype": "FP32", "shape": [-1, DIMS[0]]}])
        self.assertEqual(meta["outputs"], [{"name": "output", "datatype": "FP32", "shape": [-1, DIMS[-1]]}])
        server = self.client.get_server_metadata()
        self.assertIn("binary_tensor_data", server["extensions"])
        self.assertIn("model_repository", server["extensions"])

    def test_config_shows_the_pbtxt_batching_settings(self):
        config = self.client.get_model_config("mlp")
        self.assertEqual(config["max_batch_size"], 8)
        self.assertEqual(config["input"][0]["dims"], [DIMS[0]])
        batching = config["dynamic_batching"]
        self.assertEqual(batching["preferred_batch_size"], [4, 8])
        self.assertEqual(batching["max_queue_delay_microseconds"], 2000)
        self.assertEqual(batching["priority_levels"], 2)
        self.assertEqual(batching["default_queue_policy"]["max_queue_size"], 64)
        self.assertEqual(config["instance_group"][0]["count"], 2)

    def test_infer_binary_and_json_match_an_independent_reference(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((5, DIMS[0])).astype(np.float32)
        for binary in (True, False):
            np.testing.assert_allclose(infer(self.client, x, binary), reference(x), rtol=1e-4, atol=1e-6)
        # No outputs named: every output, binary (as the client asks).
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_allclose(
            self.client.infer("mlp", [inp]).as_numpy("output"), reference(x), rtol=1e-4, atol=1e-6
        )

    def test_concurrent_callers_get_their_own_outputs(self):
        errors = []

        def caller(i):
            client = httpclient.InferenceServerClient(URL)
            try:
                x = np.random.default_rng(100 + i).standard_normal((1 + i % 3, DIMS[0])).astype(np.float32)
                for _ in range(5):
                    np.testing.assert_allclose(infer(client, x, i % 2 == 0), reference(x), rtol=1e-4, atol=1e-6)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"caller {i}: {e}")
            finally:
                client.close()

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_statistics_count_inferences(self):
        before = self.client.get_inference_statistics("mlp")["model_stats"][0]
        infer(self.client, np.zeros((3, DIMS[0]), np.float32))
        after = self.client.get_inference_statistics("mlp")["model_stats"][0]
        self.assertEqual(after["inference_count"] - before["inference_count"], 3)
        self.assertGreaterEqual(after["inference_stats"]["success"]["count"], 1)

    def test_errors_carry_status_and_a_message_naming_the_problem(self):
        inp = httpclient.InferInput("input", [1, DIMS[0] + 1], "FP32")
        inp.set_data_from_numpy(np.zeros((1, DIMS[0] + 1), np.float32))
        with self.assertRaises(InferenceServerException) as ctx:
            self.client.infer("mlp", [inp])
        self.assertEqual(ctx.exception.status(), "400")
        self.assertIn("'input'", ctx.exception.message())
        with self.assertRaises(InferenceServerException) as ctx:
            self.client.infer("no_such_model", [inp])
        self.assertEqual(ctx.exception.status(), "404")
        self.assertIn("no_such_model", ctx.exception.message())

    def test_binary_and_json_data_for_one_input_is_a_400(self):
        header = json.dumps({
            "inputs": [{
                "name": "input", "shape": [1, DIMS[0]], "datatype": "FP32",
                "data": [0.0] * DIMS[0], "parameters": {"binary_data_size": 4 * DIMS[0]},
            }]
        }).encode()
        body = header + bytes(4 * DIMS[0])
        status, _, reply = post("/v2/models/mlp/infer", body, {"Inference-Header-Content-Length": str(len(header))})
        self.assertEqual(status, 400)
        self.assertIn("input 'input': both binary data", reply["error"])

    def test_repository_index_unload_and_load(self):
        index = {m["name"]: m for m in self.client.get_model_repository_index()}
        self.assertEqual(index["echo_types"]["state"], "READY")
        self.client.unload_model("echo_types")
        self.assertFalse(self.client.is_model_ready("echo_types"))
        self.client.load_model("echo_types")
        self.assertTrue(self.client.is_model_ready("echo_types"))
        with self.assertRaises(InferenceServerException) as ctx:
            self.client.load_model("no_such_model")
        self.assertEqual(ctx.exception.status(), "404")


if __name__ == "__main__":
    unittest.main(verbosity=2)
