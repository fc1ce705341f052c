#!/usr/bin/env python3
"""Converts Silero VAD v6 (silero-vad==6.2.3 from PyPI) to the flat float32 file callbridge loads.

Fetches the wheel with `pip download --no-deps` (never installs it: it would pull torch), takes
silero_vad/data/silero_vad.onnx, checks its sha256, reads the 8 kHz branch's weights with the `onnx` package,
and writes them little-endian in the order the Swift forward pass reads them:

  stft basis (130,1,128) · encoder.0 w (128,65,3) b (128) · encoder.1 w (64,128,3) b (64) ·
  encoder.2 w (64,64,3) b (64) · encoder.3 w (128,64,3) b (128) · lstm w_ih (512,128) w_hh (512,128)
  b_ih + b_hh (512) · decoder w (128) b (1)

Usage: export_weights.py OUT.f32   (needs: pip install onnx numpy)
Prints the float count and the FNV-1a 64 checksum the loader verifies.
"""
import hashlib, os, subprocess, sys, tempfile, zipfile

SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
PREFIX = "If_0_else_branch__Inline_0__"


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def fetch_onnx(workdir: str) -> bytes:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "silero-vad==6.2.3", "-d", workdir],
                   check=True)
    wheel = next(f for f in os.listdir(workdir) if f.startswith("silero_vad-6.2.3") and f.endswith(".whl"))
    with zipfile.ZipFile(os.path.join(workdir, wheel)) as z:
        model = z.read("silero_vad/data/silero_vad.onnx")
    digest = hashlib.sha256(model).hexdigest()
    if digest != SHA256:
        sys.exit(f"silero_vad.onnx sha256 {digest} != expected {SHA256}")
    return model


def weights(model_bytes: bytes) -> dict:
    import onnx
    from onnx import numpy_helper
    model = onnx.load_from_string(model_bytes)
    branch = next(a.g for n in model.graph.node if n.op_type == "If" for a in n.attribute if a.name == "else_branch")
    found = {}

    def walk(graph):
        for node in graph.node:
            if node.op_type == "Constant" and node.output[0].startswith(PREFIX):
                found[node.output[0][len(PREFIX):]] = numpy_helper.to_array(node.attribute[0].t)
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
    walk(branch)
    return found


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    import numpy as np
    with tempfile.TemporaryDirectory() as workdir:
        w = weights(fetch_onnx(workdir))
    order = [
        w["stft.forward_basis_buffer"],
        w["encoder.0.reparam_conv.weight"], w["encoder.0.reparam_conv.bias"],
        w["encoder.1.reparam_conv.weight"], w["encoder.1.reparam_conv.bias"],
        w["encoder.2.reparam_conv.weight"], w["encoder.2.reparam_conv.bias"],
        w["encoder.3.reparam_conv.weight"], w["encoder.3.reparam_conv.bias"],
        w["decoder.rnn.weight_ih"], w["decoder.rnn.weight_hh"],
        w["decoder.rnn.bias_ih"] + w["decoder.rnn.bias_hh"],
        w["decoder.decoder.2.weight"], np.asarray(w["decoder.decoder.2.bias"]).reshape(1),
    ]
    flat = np.concatenate([np.asarray(a, dtype="<f4").reshape(-1) for a in order])
    data = flat.tobytes()
    with open(sys.argv[1], "wb") as f:
        f.write(data)
    print(f"floats {flat.size} fnv1a64 0x{fnv1a64(data):016x}")


if __name__ == "__main__":
    main()
