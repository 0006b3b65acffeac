"""The compiled runtimes behind runtimes.py: how each is compiled from ONNX bytes and run.

`compile(onnx_bytes, precision)` returns a function of a float32 batch -> float32 outputs;
OpenVINO's also has `pipelined(batches)` (_Requests), which queues the next batch while the
runtime computes the current one. A backend with `stored(run)` and `restore(bytes,
precision)` can have what it compiled kept between processes (runtimes.py, runtime_store).
"""
import os
from collections import deque

import numpy as np

from .engine import DEFAULT_BATCH_SIZE

__all__ = ["OpenVINOBackend", "OnnxRuntimeBackend"]


def _threads():
    """The runtime's threads: every core this process may use (as the numpy plan does)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                    # not Linux
        return max(1, os.cpu_count() or 1)


class OpenVINOBackend:
    name, module = "openvino", "openvino"
    # Images per forward pass where the batch is ours to choose (a fit's extraction): any
    # size runs at the same rate (405-410 images/s at 8, 16 and 32 here: EfficientNet-Lite0,
    # 2 threads), but OpenVINO's first batch of each new size prepares its kernels and
    # buffers, which costs about half a batch (16 ms at 8 against 48 ms at 32), and a
    # smaller batch holds less memory.
    batch_size = 8

    @staticmethod
    def precisions():
        import openvino
        capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return ("f32", "bf16") if "BF16" in capabilities else ("f32",)

    @staticmethod
    def no_bf16():
        import openvino
        capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return (f"OpenVINO reports no bf16 support on this CPU (its OPTIMIZATION_CAPABILITIES "
                f"are {', '.join(capabilities)}; bf16 needs AVX512_BF16 or AMX)")

    @staticmethod
    def compile(onnx_bytes, precision):
        """One compiled model for any batch size (the batch dimension left dynamic): 0.1 s
        for EfficientNet-Lite0 on a quiet 2-core EPYC. runtimes.py keeps what it compiled
        (`stored`, runtime_store) and restores it the next time, rather than OpenVINO's own
        model cache: a model OpenVINO restored from there exports bytes that it cannot
        import (2026.4.1)."""
        import openvino
        core = openvino.Core()
        return _Requests(core.compile_model(core.read_model(onnx_bytes, b""), "CPU",
                                            OpenVINOBackend.settings(precision)))

    @staticmethod
    def settings(precision):
        """How it compiles: every core (_threads), one stream, for latency, in `precision`.
        A compiled model keeps them: runtime_store's key names them."""
        return {"INFERENCE_NUM_THREADS": _threads(), "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}

    @staticmethod
    def stored(run):
        """The compiled model behind `run` (from compile or restore), as bytes to keep."""
        return run.compiled.export_model().getvalue()

    @staticmethod
    def restore(body, precision):
        """A run function like compile's, from `stored` bytes: 15 ms for EfficientNet-Lite0,
        against 0.1 s to compile it (and 20-25 ms to export the ONNX bytes compile reads).
        Raises (RuntimeError) on bytes it cannot read."""
        import openvino
        return _Requests(openvino.Core().import_model(body, "CPU",
                                                      OpenVINOBackend.settings(precision)))


class OnnxRuntimeBackend:
    name, module = "onnxruntime", "onnxruntime"
    batch_size = DEFAULT_BATCH_SIZE

    @staticmethod
    def precisions():
        return ("f32",)

    @staticmethod
    def no_bf16():
        return ("ONNX Runtime's CPU provider computes these layers in float32 only; "
                "bf16 runs on --runtime openvino")

    @staticmethod
    def compile(onnx_bytes, precision):
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = _threads(), 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3                   # its warnings are not the user's
        # Its idle threads would spin, taking the cores that decode the next batch's images:
        # `retrain classify` on 600 photos took 8.5-9.8 s without spinning, 11.3-13.3 s with
        # (interleaved, 3 each, loaded 2-core machine).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(onnx_bytes, options,
                                               providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: np.asarray(session.run(None, {name: x})[0], np.float32)


class _Requests:
    """OpenVINO infer requests of one compiled model. Each reads its input array in place
    (share_inputs: no copy of 19 MB per batch of 32) and reuses its output buffer, hence
    the copy of the outputs. Called, it computes a batch at once; `pipelined` keeps two
    requests in turn on the model's one stream, so that the next batch is prepared (decoded,
    normalised) and the last one's outputs used while the runtime computes."""

    def __init__(self, compiled):
        import openvino
        self.compiled, self._tensor = compiled, openvino.Tensor
        self._now = compiled.create_infer_request()
        self._turns = deque(compiled.create_infer_request() for _ in range(2))

    def __call__(self, x):
        return np.array(self._now.infer([x], share_inputs=True, share_outputs=True)[0],
                        np.float32, copy=True)

    def pipelined(self, batches):
        """Yield (item, outputs) for each (item, x) of `batches` in order; outputs None where
        x holds no image. Batch k+1 is taken from `batches` and queued before batch k's
        outputs are handed on."""
        computing = deque()                     # (item, request or None, x kept alive)
        try:
            for item, x in batches:
                computing.append((item, self._start(x) if len(x) else None, x))
                if len(computing) == 2:
                    yield self._finish(*computing.popleft())
            while computing:
                yield self._finish(*computing.popleft())
        finally:                                # never free an array a request still reads
            for _, request, _ in computing:
                if request is not None:
                    request.wait()

    def _start(self, x):
        request = self._turns[0]
        self._turns.rotate(-1)
        # The input set as a tensor over x's memory, then started: 60-80 us a batch, where
        # start_async([x], share_inputs=True) sorts out its arguments in Python first
        # (180-200 us: 125 batches of 8 in a fit on the sample).
        request.set_input_tensor(self._tensor(np.ascontiguousarray(x, np.float32),
                                              shared_memory=True))
        request.start_async()
        return request

    @staticmethod
    def _finish(item, request, x):
        if request is None:
            return item, None
        request.wait()
        return item, np.array(request.get_output_tensor(0).data, np.float32, copy=True)
