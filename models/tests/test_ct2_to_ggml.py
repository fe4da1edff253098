"""Unit tests of the CTranslate2 → ggml converter on a tiny synthetic Whisper model.

Run: models/cache/.venv/bin/python -m unittest discover -s models/tests
"""

import io
import os
import struct
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import ct2_to_ggml as conv  # noqa: E402

STATE, HEADS, MELS, AUDIO_CTX, TEXT_CTX = 32, 2, 4, 6, 5
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>"]
TOKENS = ["!", "Ġhello", "Ċ", "Ã©", "world"]


def ct2_bytes(variables, aliases=(), version=6, spec="WhisperSpec"):
    """Serialise {name: ndarray} in CTranslate2's model.bin layout."""

    def name(s):
        raw = s.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
             np.dtype(np.float16): 4}
    out = struct.pack("<I", version) + name(spec) + struct.pack("<II", 3, len(variables))
    for n, v in variables.items():
        v = np.asarray(v)
        out += name(n) + struct.pack("<B", v.ndim) + struct.pack("<" + "I" * v.ndim, *v.shape)
        data = v.astype(v.dtype.newbyteorder("<")).tobytes()
        out += struct.pack("<BI", codes[v.dtype], len(data)) + data
    out += struct.pack("<I", len(aliases))
    for a, t in aliases:
        out += name(a) + name(t)
    return out


def synthetic_model(rng, n_vocab):
    """A one-layer encoder and decoder with Whisper's CTranslate2 variable names."""
    w = lambda *shape: rng.standard_normal(shape).astype(np.float16)
    s = STATE
    v = {
        "decoder/activation": np.int8(3),
        "decoder/alibi": np.int8(0),
        "decoder/num_heads": np.int16(HEADS),
        "decoder/pre_norm": np.int8(1),
        "decoder/scale_embeddings": np.int8(0),
        "decoder/start_from_zero_embedding": np.int8(0),
        "encoder/num_heads": np.int16(HEADS),
        "decoder/embeddings/weight": w(n_vocab, s),
        "decoder/position_encodings/encodings": w(TEXT_CTX, s),
        "decoder/layer_norm/gamma": w(s),
        "decoder/layer_norm/beta": w(s),
        "encoder/position_encodings/encodings": w(AUDIO_CTX, s),
        "encoder/conv1/weight": w(s, MELS, 3),
        "encoder/conv1/bias": w(s),
        "encoder/conv2/weight": w(s, s, 3),
        "encoder/conv2/bias": w(s),
        "encoder/layer_norm/gamma": w(s),
        "encoder/layer_norm/beta": w(s),
    }

    def self_attention(prefix):
        bias = w(3 * s)
        bias[s : 2 * s] = 0  # CTranslate2 stores a zero key bias
        v[f"{prefix}/self_attention/layer_norm/gamma"] = w(s)
        v[f"{prefix}/self_attention/layer_norm/beta"] = w(s)
        v[f"{prefix}/self_attention/linear_0/weight"] = w(3 * s, s)
        v[f"{prefix}/self_attention/linear_0/bias"] = bias
        v[f"{prefix}/self_attention/linear_1/weight"] = w(s, s)
        v[f"{prefix}/self_attention/linear_1/bias"] = w(s)

    def ffn(prefix):
        v[f"{prefix}/ffn/layer_norm/gamma"] = w(s)
        v[f"{prefix}/ffn/layer_norm/beta"] = w(s)
        v[f"{prefix}/ffn/linear_0/weight"] = w(4 * s, s)
        v[f"{prefix}/ffn/linear_0/bias"] = w(4 * s)
        v[f"{prefix}/ffn/linear_1/weight"] = w(s, 4 * s)
        v[f"{prefix}/ffn/linear_1/bias"] = w(s)

    self_attention("encoder/layer_0")
    ffn("encoder/layer_0")
    self_attention("decoder/layer_0")
    ffn("decoder/layer_0")
    kv_bias = w(2 * s)
    kv_bias[:s] = 0
    v["decoder/layer_0/attention/layer_norm/gamma"] = w(s)
    v["decoder/layer_0/attention/layer_norm/beta"] = w(s)
    v["decoder/layer_0/attention/linear_0/weight"] = w(s, s)
    v["decoder/layer_0/attention/linear_0/bias"] = w(s)
    v["decoder/layer_0/attention/linear_1/weight"] = w(2 * s, s)
    v["decoder/layer_0/attention/linear_1/bias"] = kv_bias
    v["decoder/layer_0/attention/linear_2/weight"] = w(s, s)
    v["decoder/layer_0/attention/linear_2/bias"] = w(s)
    return v


def read_ggml(data):
    """Parse a ggml Whisper file back: (hparams, filters, vocab, {name: (type, dims, bytes)})."""
    f = io.BytesIO(data)
    read = lambda fmt: struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))
    assert read("I")[0] == conv.GGML_MAGIC
    hp = read("i" * 11)
    n_mel, n_fft = read("ii")
    filters = np.frombuffer(f.read(4 * n_mel * n_fft), dtype="<f4").reshape(n_mel, n_fft)
    (n_vocab,) = read("i")
    vocab = [f.read(read("I")[0]) for _ in range(n_vocab)]
    tensors = {}
    while True:
        head = f.read(12)
        if not head:
            break
        n_dims, name_len, ttype = struct.unpack("<iii", head)
        dims = read("i" * n_dims)
        name = f.read(name_len).decode()
        n = int(np.prod(dims))
        _, _, block, block_bytes = {0: (0, 0, 1, 4), **{t: (t, 0, b, bb) for t, _, b, bb in conv.WEIGHT_TYPES.values()}}[ttype]
        tensors[name] = (ttype, dims, f.read(n // block * block_bytes))
    return hp, filters, vocab, tensors


def dequantize(ttype, raw, n):
    """Reference dequantization of ggml blocks (ggml-quants.c dequantize_row_*)."""
    if ttype == 1:
        return np.frombuffer(raw, dtype="<f2").astype(np.float32)
    if ttype == 8:  # q8_0
        b = np.frombuffer(raw, dtype=[("d", "<f2"), ("qs", "i1", 32)])
        return (b["d"].astype(np.float32)[:, None] * b["qs"]).reshape(n)
    if ttype == 2:  # q4_0
        b = np.frombuffer(raw, dtype=[("d", "<f2"), ("qs", "u1", 16)])
        lo, hi = (b["qs"] & 0x0F).astype(np.int32) - 8, (b["qs"] >> 4).astype(np.int32) - 8
        return (b["d"].astype(np.float32)[:, None] * np.concatenate([lo, hi], axis=1)).reshape(n)
    if ttype == 6:  # q5_0
        b = np.frombuffer(raw, dtype=[("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])
        bits = (b["qh"][:, None] >> np.arange(32, dtype=np.uint32)) & 1
        lo = (b["qs"] & 0x0F).astype(np.int32) | (bits[:, :16].astype(np.int32) << 4)
        hi = (b["qs"] >> 4).astype(np.int32) | (bits[:, 16:].astype(np.int32) << 4)
        return (b["d"].astype(np.float32)[:, None] * (np.concatenate([lo, hi], axis=1) - 16)).reshape(n)
    raise AssertionError(f"type {ttype}")


class ConverterTest(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(7)
        self.vocab_text = "\n".join(TOKENS + SPECIALS) + "\n"
        self.n_vocab = len(TOKENS) + len(SPECIALS)
        self.vars = synthetic_model(self.rng, self.n_vocab)

    def convert(self, variables=None, weight_type="f16", aliases=(("decoder/projection/weight", "decoder/embeddings/weight"),)):
        out = io.BytesIO()
        conv.convert(ct2_bytes(variables or self.vars, aliases), self.vocab_text, out, weight_type)
        return read_ggml(out.getvalue())

    def test_header_vocabulary_and_tensor_layout(self):
        hp, filters, vocab, tensors = self.convert()
        self.assertEqual(hp, (self.n_vocab, AUDIO_CTX, STATE, HEADS, 1, TEXT_CTX, STATE, HEADS, 1, MELS, 1))
        self.assertEqual(filters.shape, (MELS, 201))
        # Tokens before <|endoftext|>, decoded from GPT-2's byte alphabet.
        self.assertEqual(vocab, [b"!", b" hello", b"\n", "é".encode(), b"world"])
        # Exactly the tensors whisper.cpp creates for a 1+1 layer model: 7 encoder-wide,
        # 15 per encoder layer, 4 decoder-wide, 24 per decoder layer.
        self.assertEqual(len(tensors), 7 + 15 + 4 + 24)
        self.assertNotIn("encoder.blocks.0.attn.key.bias", tensors)
        ttype, dims, _ = tensors["encoder.conv1.weight"]
        self.assertEqual((ttype, dims), (1, (3, MELS, STATE)))  # f16, dims reversed
        self.assertEqual(tensors["encoder.conv1.bias"][:2], (0, (1, STATE)))
        self.assertEqual(tensors["decoder.positional_embedding"][:2], (0, (STATE, TEXT_CTX)))
        self.assertEqual(tensors["decoder.token_embedding.weight"][:2], (1, (STATE, self.n_vocab)))
        self.assertEqual(tensors["decoder.blocks.0.mlp.0.weight"][:2], (1, (STATE, 4 * STATE)))

    def test_fused_projections_are_split_in_order(self):
        _, _, _, t = self.convert()
        s = STATE
        f16 = lambda name: np.frombuffer(t[name][2], dtype="<f2")
        f32 = lambda name: np.frombuffer(t[name][2], dtype="<f4")
        qkv = self.vars["encoder/layer_0/self_attention/linear_0/weight"]
        np.testing.assert_array_equal(f16("encoder.blocks.0.attn.query.weight"), qkv[:s].ravel())
        np.testing.assert_array_equal(f16("encoder.blocks.0.attn.key.weight"), qkv[s : 2 * s].ravel())
        np.testing.assert_array_equal(f16("encoder.blocks.0.attn.value.weight"), qkv[2 * s :].ravel())
        bias = self.vars["decoder/layer_0/self_attention/linear_0/bias"].astype(np.float32)
        np.testing.assert_array_equal(f32("decoder.blocks.0.attn.value.bias"), bias[2 * s :])
        kv = self.vars["decoder/layer_0/attention/linear_1/weight"]
        np.testing.assert_array_equal(f16("decoder.blocks.0.cross_attn.key.weight"), kv[:s].ravel())
        np.testing.assert_array_equal(f16("decoder.blocks.0.cross_attn.value.weight"), kv[s:].ravel())
        out = self.vars["decoder/layer_0/attention/linear_2/weight"]
        np.testing.assert_array_equal(f16("decoder.blocks.0.cross_attn.out.weight"), out.ravel())
        gamma = self.vars["encoder/layer_norm/gamma"].astype(np.float32)
        np.testing.assert_array_equal(f32("encoder.ln_post.weight"), gamma)

    def test_quantized_weights_dequantize_close_to_the_originals(self):
        # Worst case per element, as ggml's reference quantizers round: half a step for the
        # symmetric q8_0 (max|x|/254); a whole step for q5_0 and q4_0, whose range of
        # -16..15 (-8..7) clips the value opposite the block's extreme (max|x|/16, /8).
        for weight_type, worst in (("q8_0", 1 / 254), ("q5_0", 1 / 16), ("q4_0", 1 / 8)):
            hp, _, _, t = self.convert(weight_type=weight_type)
            self.assertEqual(hp[-1], conv.WEIGHT_TYPES[weight_type][1] + 2000)
            ttype, dims, raw = t["decoder.blocks.0.mlp.0.weight"]
            self.assertEqual(ttype, conv.WEIGHT_TYPES[weight_type][0])
            original = self.vars["decoder/layer_0/ffn/linear_0/weight"].astype(np.float32).ravel()
            restored = dequantize(ttype, raw, original.size)
            block_max = np.abs(original.reshape(-1, 32)).max(axis=1, keepdims=True)
            err = np.abs(restored - original).reshape(-1, 32)
            self.assertTrue(np.all(err <= block_max * worst * 1.01 + 1e-3), weight_type)
            self.assertLess(err.mean(), (block_max * worst).mean() * 0.6, weight_type)
            # Biases, norms, positions and convolutions are never quantized.
            self.assertEqual(t["decoder.blocks.0.mlp.0.bias"][0], 0)
            self.assertEqual(t["encoder.conv2.weight"][0], 1)
            self.assertEqual(t["encoder.positional_embedding"][0], 0)

    def test_int8_weights_are_dequantized_with_their_scale(self):
        v = dict(self.vars)
        w = v["encoder/layer_0/ffn/linear_1/weight"].astype(np.float32)
        scale = 127.0 / np.abs(w).max(axis=1)
        v["encoder/layer_0/ffn/linear_1/weight"] = np.round(w * scale[:, None]).astype(np.int8)
        v["encoder/layer_0/ffn/linear_1/weight_scale"] = scale.astype(np.float32)
        _, _, _, t = self.convert(v)
        restored = np.frombuffer(t["encoder.blocks.0.mlp.2.weight"][2], dtype="<f2").astype(np.float32)
        np.testing.assert_allclose(restored.reshape(w.shape), w, atol=np.abs(w).max() / 100)

    def assertRefused(self, variables, message, **kwargs):
        with self.assertRaises(conv.ConversionError) as caught:
            self.convert(variables, **kwargs)
        self.assertIn(message, str(caught.exception))

    def test_non_zero_key_bias_is_refused(self):
        v = dict(self.vars)
        bias = v["encoder/layer_0/self_attention/linear_0/bias"].copy()
        bias[STATE + 1] = 0.5
        v["encoder/layer_0/self_attention/linear_0/bias"] = bias
        self.assertRefused(v, "non-zero key bias")

    def test_unknown_missing_and_misshapen_variables_are_refused(self):
        v = dict(self.vars, **{"encoder/layer_0/extra/weight": np.zeros((2, 2), np.float16)})
        self.assertRefused(v, "does not understand: ['encoder/layer_0/extra/weight']")
        v = dict(self.vars)
        del v["decoder/layer_0/attention/linear_2/bias"]
        self.assertRefused(v, "missing variable 'decoder/layer_0/attention/linear_2/bias'")
        v = dict(self.vars)
        v["encoder/layer_0/ffn/linear_0/weight"] = np.zeros((4 * STATE, STATE + 1), np.float16)
        self.assertRefused(v, "expected (128, 32)")
        v = dict(self.vars, **{"decoder/activation": np.int8(1)})
        self.assertRefused(v, "decoder/activation = 1")

    def test_malformed_files_are_refused(self):
        data = ct2_bytes(self.vars)
        for bad, message in (
            (data[:1000], "truncated"),
            (ct2_bytes(self.vars, version=5), "version 5"),
            (ct2_bytes(self.vars, spec="TransformerSpec"), "not a WhisperSpec"),
            (data + b"\0", "trailing bytes"),
        ):
            with self.assertRaises(conv.ConversionError) as caught:
                conv.convert(bad, self.vocab_text, io.BytesIO())
            self.assertIn(message, str(caught.exception))
        with self.assertRaises(conv.ConversionError) as caught:
            conv.convert(data, "a\nb\n", io.BytesIO())
        self.assertIn("no <|endoftext|>", str(caught.exception))

    def test_mel_filters_are_slaney_normalised_triangles(self):
        filters = conv.mel_filters(80)
        self.assertEqual(filters.shape, (80, 201))
        self.assertTrue(np.all(filters >= 0))
        # Slaney normalisation: every triangle has unit area in Hz (bins are 40 Hz apart);
        # checked on the wide upper filters, where sampling the triangle is accurate.
        areas = filters.sum(axis=1) * 40.0
        np.testing.assert_allclose(areas[40:], 1.0, rtol=0.08)
        self.assertAlmostEqual(float(areas[40:].mean()), 1.0, delta=0.01)
        # Peaks rise monotonically; the linear region below 1 kHz is 200/3 Hz per mel.
        peaks = filters.argmax(axis=1)
        self.assertTrue(np.all(np.diff(peaks) >= 0))
        # The last centre is 80/81 of the way up to mel(8 kHz) = 45.25, i.e. 7699 Hz: bin 192.
        self.assertEqual(peaks[-1], 192)


if __name__ == "__main__":
    unittest.main()
