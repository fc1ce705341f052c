#!/usr/bin/env python3
"""Reference speech probabilities from onnxruntime, for the Swift Silero port's test.

Mixes Fixtures/audio/hello.wav with Fixtures/audio/line-noise.wav at 10 dB SNR into Fixtures/silero/clip.wav (8 kHz,
16-bit), then streams it through silero_vad.onnx exactly as silero-vad's OnnxWrapper does at 8 kHz (256-sample
windows, 32 carried context samples, state carried) and writes Fixtures/silero/reference.csv (start_ms,probability).
Needs onnxruntime, onnx and numpy only when regenerating: pip install onnxruntime onnx numpy.
"""
import csv, hashlib, os, subprocess, sys, tempfile, wave, zipfile
import numpy as np

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"


def read_wav(path):
    with wave.open(path) as w:
        assert w.getframerate() == 8000 and w.getsampwidth() == 2 and w.getnchannels() == 1, path
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64)


def main():
    speech = read_wav(os.path.join(ROOT, "Fixtures/audio/hello.wav"))
    noise = read_wav(os.path.join(ROOT, "Fixtures/audio/line-noise.wav"))[: len(speech)]
    rms = lambda x: np.sqrt(np.mean(x[x != 0] ** 2))
    mix = speech + noise * (rms(speech) / rms(noise)) * 10 ** (-10 / 20)
    clip = np.clip(np.round(mix), -32768, 32767).astype("<i2")
    out_dir = os.path.join(ROOT, "Fixtures/silero")
    with wave.open(os.path.join(out_dir, "clip.wav"), "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000); w.writeframes(clip.tobytes())

    with tempfile.TemporaryDirectory() as d:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "silero-vad==6.2.3", "-d", d],
                       check=True)
        wheel = next(f for f in os.listdir(d) if f.endswith(".whl"))
        model = zipfile.ZipFile(os.path.join(d, wheel)).read("silero_vad/data/silero_vad.onnx")
    assert hashlib.sha256(model).hexdigest() == SHA256
    import onnxruntime as ort
    opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    samples = clip.astype(np.float32) / 32768.0
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, 32), dtype=np.float32)
    sr = np.array(8000, dtype=np.int64)
    with open(os.path.join(out_dir, "reference.csv"), "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["start_ms", "probability"])
        for start in range(0, len(samples) - 255, 256):
            chunk = samples[start:start + 256].reshape(1, 256)
            x = np.concatenate([context, chunk], axis=1)
            out, state = session.run(None, {"input": x, "state": state, "sr": sr})
            context = x[:, -32:]
            writer.writerow([start // 8, repr(float(out[0][0]))])


if __name__ == "__main__":
    main()
