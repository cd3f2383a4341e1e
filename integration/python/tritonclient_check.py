"""Triton's own Python client, unchanged, against meridian-sidecar.

Run by integration/tests/triton_clients.rs with:
  MERIDIAN_GRPC=host:port  MERIDIAN_MLP_DIMS=16,32,4  MERIDIAN_SEED=7
and, for a sidecar with mutual TLS, MERIDIAN_TLS_DIR=<folder with ca.pem,
cert.pem, key.pem> (the client connects with ssl=True and that certificate).
The reference output is computed here with numpy from the seed alone
(SplitMix64 weights, see seeded.py), independently of tract.
"""
import os
import threading
import unittest

import numpy as np
import seeded  # beside this script
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

URL = os.environ["MERIDIAN_GRPC"]
DIMS = [int(d) for d in os.environ["MERIDIAN_MLP_DIMS"].split(",")]
SEED = int(os.environ["MERIDIAN_SEED"])
TLS_DIR = os.environ.get("MERIDIAN_TLS_DIR")


def connect():
    if not TLS_DIR:
        return grpcclient.InferenceServerClient(URL)
    return grpcclient.InferenceServerClient(
        URL,
        ssl=True,
        root_certificates=os.path.join(TLS_DIR, "ca.pem"),
        private_key=os.path.join(TLS_DIR, "key.pem"),
        certificate_chain=os.path.join(TLS_DIR, "cert.pem"),
    )


def reference(x):
    return seeded.mlp(x, SEED, DIMS)


def infer(client, x):
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out = grpcclient.InferRequestedOutput("output")
    return client.infer("mlp", [inp], outputs=[out]).as_numpy("output")


class TritonClient(unittest.TestCase):
    def setUp(self):
        self.client = connect()

    def test_liveness_and_readiness(self):
        self.assertTrue(self.client.is_server_live())
        self.assertTrue(self.client.is_server_ready())
        self.assertTrue(self.client.is_model_ready("mlp"))
        self.assertFalse(self.client.is_model_ready("no_such_model"))

    def test_metadata_and_config(self):
        meta = self.client.get_model_metadata("mlp", as_json=True)
        self.assertEqual(meta["name"], "mlp")
        self.assertEqual(meta["versions"], ["1"])
        self.assertEqual(meta["inputs"][0], {"name": "input", "datatype": "FP32", "shape": ["-1", str(DIMS[0])]})
        self.assertEqual(meta["outputs"][0]["shape"], ["-1", str(DIMS[-1])])
        config = self.client.get_model_config("mlp", as_json=True)["config"]
        self.assertEqual(config["max_batch_size"], 8)
        self.assertEqual(config["input"][0]["dims"], [str(DIMS[0])])
        self.assertEqual(config["input"][0]["data_type"], "TYPE_FP32")
        server = self.client.get_server_metadata(as_json=True)
        self.assertIn("statistics", server["extensions"])

    def test_infer_matches_an_independent_reference(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((5, DIMS[0])).astype(np.float32)
        np.testing.assert_allclose(infer(self.client, x), reference(x), rtol=1e-4, atol=1e-6)

    def test_concurrent_callers_get_their_own_outputs(self):
        errors = []

        def caller(i):
            try:
                client = connect()
                x = np.random.default_rng(100 + i).standard_normal((1 + i % 3, DIMS[0])).astype(np.float32)
                for _ in range(5):
                    np.testing.assert_allclose(infer(client, x), reference(x), rtol=1e-4, atol=1e-6)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(f"caller {i}: {e}")

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])

    def test_statistics_count_inferences(self):
        before = self.client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
        infer(self.client, np.zeros((3, DIMS[0]), np.float32))
        after = self.client.get_inference_statistics("mlp", as_json=True)["model_stats"][0]
        self.assertEqual(int(after.get("inference_count", 0)) - int(before.get("inference_count", 0)), 3)

    def test_bad_shape_is_invalid_argument_naming_the_input(self):
        inp = grpcclient.InferInput("input", [1, DIMS[0] + 1], "FP32")
        inp.set_data_from_numpy(np.zeros((1, DIMS[0] + 1), np.float32))
        with self.assertRaises(InferenceServerException) as ctx:
            self.client.infer("mlp", [inp])
        self.assertEqual(ctx.exception.status(), "StatusCode.INVALID_ARGUMENT")
        self.assertIn("'input'", ctx.exception.message())


if __name__ == "__main__":
    unittest.main(verbosity=2)
