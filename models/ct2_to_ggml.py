#!/usr/bin/env python3
"""Convert a CTranslate2 Whisper model to whisper.cpp's ggml file format.

Usage:
    ct2_to_ggml.py --model-bin model.bin [--model-bin part2 ...] --vocabulary vocabulary.txt
                   --output ggml-base.bin [--type f16|q8_0|q5_0|q4_0]

Several ``--model-bin`` parts are concatenated in order (the base model ships split in two).

The specification of the output is whisper.cpp's own loader (``whisper_model_load`` in the
vendored whisper.cpp of whisper-rs-sys): magic, eleven int32 hparams, the mel filter bank,
the vocabulary as length-prefixed bytes, then every tensor as
``n_dims, name_len, type, dims (ggml order = numpy shape reversed), name, data``.
whisper.cpp requires exactly the tensors it expects, with exact types, so this script checks
every name and shape and refuses anything it does not understand.

Only numpy is needed.
"""

import argparse
import io
import os
import re
import struct
import sys

import numpy as np

GGML_MAGIC = 0x67676D6C
GGML_QNT_VERSION = 2
GGML_QNT_VERSION_FACTOR = 1000

# ggml tensor types (ggml.h: enum ggml_type) and whisper.cpp's header ftypes
# (ggml.h: enum ggml_ftype) for the weight types this converter can write.
WEIGHT_TYPES = {
    #  name    ggml_type  ftype  block  bytes/block
    "f16": (1, 1, 1, 2),
    "q4_0": (2, 2, 32, 18),
    "q5_0": (6, 8, 32, 22),
    "q8_0": (8, 7, 32, 34),
}
GGML_TYPE_F32 = 0
GGML_TYPE_F16 = 1

# CTranslate2 dtype codes (ctranslate2/types.h).
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
CT2_BF16 = 5


class ConversionError(Exception):
    """The input is not a CTranslate2 Whisper model this converter understands."""


# --------------------------------------------------------------------------------------
# CTranslate2 model.bin
# --------------------------------------------------------------------------------------


def read_ct2(data):
    """Parse a CTranslate2 ``model.bin`` (format version 6) into {name: ndarray}.

    Layout: u32 version, u16-length spec name, u32 spec revision, u32 variable count, then per
    variable: u16-length name, u8 rank, rank x u32 dims, u8 dtype, u32 byte count, data;
    then u32 alias count and (alias, target) name pairs. Names end with a NUL counted in
    their length. Integers are little-endian.
    """
    f = io.BytesIO(data)

    def read(fmt):
        size = struct.calcsize("<" + fmt)
        raw = f.read(size)
        if len(raw) != size:
            raise ConversionError(f"model.bin is truncated at byte {f.tell()}")
        return struct.unpack("<" + fmt, raw)

    def read_name():
        (length,) = read("H")
        raw = f.read(length)
        if len(raw) != length:
            raise ConversionError(f"model.bin is truncated at byte {f.tell()}")
        return raw.rstrip(b"\0").decode("utf-8")

    (version,) = read("I")
    if version != 6:
        raise ConversionError(f"unsupported CTranslate2 model.bin version {version} (expected 6)")
    spec = read_name()
    if spec != "WhisperSpec":
        raise ConversionError(f"model.bin holds a {spec!r}, not a WhisperSpec")
    read("I")  # spec revision: the layout below is the same for every revision seen
    (count,) = read("I")
    variables = {}
    for _ in range(count):
        name = read_name()
        (rank,) = read("B")
        shape = read("I" * rank) if rank else ()
        (dtype,) = read("B")
        (nbytes,) = read("I")
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ConversionError(f"model.bin is truncated inside variable {name!r}")
        if dtype == CT2_BF16:
            u16 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = u16.view(np.float32)
        elif dtype in CT2_DTYPES:
            array = np.frombuffer(raw, dtype=np.dtype(CT2_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise ConversionError(f"variable {name!r} has unknown CTranslate2 dtype code {dtype}")
        expected = int(np.prod(shape)) if shape else 1
        if array.size != expected:
            raise ConversionError(
                f"variable {name!r}: {array.size} values for shape {tuple(shape)}"
            )
        variables[name] = array.reshape(shape) if shape else array.reshape(())
    (aliases,) = read("I")
    for _ in range(aliases):
        alias, target = read_name(), read_name()
        if target not in variables:
            raise ConversionError(f"alias {alias!r} points to missing variable {target!r}")
        variables[alias] = variables[target]
    if f.read(1):
        raise ConversionError("trailing bytes after the alias table in model.bin")
    return variables


def dequantize_int8(variables):
    """CTranslate2 int8 weights carry a per-row ``weight_scale``: w = q / scale."""
    for name in [n for n in variables if n.endswith("/weight_scale")]:
        weight_name = name[: -len("_scale")]
        weight = variables.get(weight_name)
        if weight is None or weight.dtype != np.int8:
            raise ConversionError(f"{name!r} has no int8 weight to scale")
        scale = variables.pop(name).astype(np.float32)
        variables[weight_name] = weight.astype(np.float32) / scale.reshape(-1, 1)
    for name, value in variables.items():
        if value.dtype == np.int8 and value.ndim >= 2:
            raise ConversionError(f"int8 weight {name!r} has no weight_scale")


# --------------------------------------------------------------------------------------
# Name mapping
# --------------------------------------------------------------------------------------

# Variables that carry configuration, not weights; read or checked, never written.
SCALARS = {
    "decoder/activation",
    "decoder/alibi",
    "decoder/alignment_heads",
    "decoder/alignment_layer",
    "decoder/num_heads",
    "decoder/pre_norm",
    "decoder/scale_embeddings",
    "decoder/start_from_zero_embedding",
    "encoder/num_heads",
    "encoder/activation",
    "encoder/pre_norm",
}
# Variables the decoder ties to others (the output projection is the token embedding).
TIED = {"decoder/projection/weight"}


def scalar(variables, name):
    value = variables.get(name)
    if value is None or value.ndim != 0:
        raise ConversionError(f"missing scalar {name!r}")
    return int(value)


def hparams_of(variables):
    """Whisper hyper-parameters, read from shapes and the num_heads scalars."""

    def shape(name, rank):
        value = variables.get(name)
        if value is None:
            raise ConversionError(f"missing variable {name!r}")
        if value.ndim != rank:
            raise ConversionError(f"{name!r} has rank {value.ndim}, expected {rank}")
        return value.shape

    n_vocab, n_text_state = shape("decoder/embeddings/weight", 2)
    n_text_ctx, pe_state = shape("decoder/position_encodings/encodings", 2)
    n_audio_ctx, n_audio_state = shape("encoder/position_encodings/encodings", 2)
    conv_state, n_mels, kernel = shape("encoder/conv1/weight", 3)
    if pe_state != n_text_state or conv_state != n_audio_state or kernel != 3:
        raise ConversionError("inconsistent embedding / convolution shapes")
    if n_text_state != n_audio_state:
        raise ConversionError("whisper.cpp requires equal encoder and decoder widths")

    def layers(prefix):
        found = {int(m.group(1)) for n in variables if (m := re.match(prefix + r"/layer_(\d+)/", n))}
        if found != set(range(len(found))):
            raise ConversionError(f"{prefix} layers are not numbered 0..n-1: {sorted(found)}")
        return len(found)

    return {
        "n_vocab": n_vocab,
        "n_audio_ctx": n_audio_ctx,
        "n_audio_state": n_audio_state,
        "n_audio_head": scalar(variables, "encoder/num_heads"),
        "n_audio_layer": layers("encoder"),
        "n_text_ctx": n_text_ctx,
        "n_text_state": n_text_state,
        "n_text_head": scalar(variables, "decoder/num_heads"),
        "n_text_layer": layers("decoder"),
        "n_mels": n_mels,
    }


def ggml_tensors(variables, hp):
    """Yield (ggml name, array, kind) in whisper.cpp's naming, checking every shape.

    kind is "weight" (2-D matmul weight: written in the chosen weight type), "conv" (f16
    unless the model is f32) or "f32" (biases, norms, positional embeddings).
    """
    used = set(SCALARS) | TIED
    state = hp["n_audio_state"]

    def take(name, shape):
        value = variables.get(name)
        if value is None:
            raise ConversionError(f"missing variable {name!r}")
        if tuple(value.shape) != tuple(shape):
            raise ConversionError(f"{name!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        used.add(name)
        return value.astype(np.float32)

    def zero_key_bias(name, bias):
        # whisper.cpp's attention has no key bias; CTranslate2 stores zeros there.
        if np.any(bias != 0):
            raise ConversionError(f"{name!r} has a non-zero key bias, which whisper.cpp cannot use")

    def layer_norm(src, dst, width):
        yield f"{dst}.weight", take(f"{src}/gamma", (width,)), "f32"
        yield f"{dst}.bias", take(f"{src}/beta", (width,)), "f32"

    def linear(src, dst, rows, cols):
        yield f"{dst}.weight", take(f"{src}/weight", (rows, cols)), "weight"
        yield f"{dst}.bias", take(f"{src}/bias", (rows,)), "f32"

    def fused_qkv(src, dst):
        # [q; k; v] stacked on the output axis.
        w = take(f"{src}/linear_0/weight", (3 * state, state))
        b = take(f"{src}/linear_0/bias", (3 * state,))
        zero_key_bias(f"{src}/linear_0/bias", b[state : 2 * state])
        yield f"{dst}.query.weight", w[:state], "weight"
        yield f"{dst}.query.bias", b[:state], "f32"
        yield f"{dst}.key.weight", w[state : 2 * state], "weight"
        yield f"{dst}.value.weight", w[2 * state :], "weight"
        yield f"{dst}.value.bias", b[2 * state :], "f32"
        yield from linear(f"{src}/linear_1", f"{dst}.out", state, state)

    def ffn(src, dst):
        yield from layer_norm(f"{src}/layer_norm", f"{dst}.mlp_ln", state)
        yield from linear(f"{src}/linear_0", f"{dst}.mlp.0", 4 * state, state)
        yield from linear(f"{src}/linear_1", f"{dst}.mlp.2", state, 4 * state)

    # Encoder.
    yield "encoder.positional_embedding", take(
        "encoder/position_encodings/encodings", (hp["n_audio_ctx"], state)
    ), "f32"
    yield "encoder.conv1.weight", take("encoder/conv1/weight", (state, hp["n_mels"], 3)), "conv"
    yield "encoder.conv1.bias", take("encoder/conv1/bias", (state,)).reshape(state, 1), "f32"
    yield "encoder.conv2.weight", take("encoder/conv2/weight", (state, state, 3)), "conv"
    yield "encoder.conv2.bias", take("encoder/conv2/bias", (state,)).reshape(state, 1), "f32"
    yield from layer_norm("encoder/layer_norm", "encoder.ln_post", state)
    for i in range(hp["n_audio_layer"]):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        yield from ffn(f"{src}/ffn", dst)
        yield from layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", state)
        yield from fused_qkv(f"{src}/self_attention", f"{dst}.attn")

    # Decoder.
    yield "decoder.positional_embedding", take(
        "decoder/position_encodings/encodings", (hp["n_text_ctx"], state)
    ), "f32"
    yield "decoder.token_embedding.weight", take(
        "decoder/embeddings/weight", (hp["n_vocab"], state)
    ), "weight"
    yield from layer_norm("decoder/layer_norm", "decoder.ln", state)
    for i in range(hp["n_text_layer"]):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        yield from ffn(f"{src}/ffn", dst)
        yield from layer_norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", state)
        yield from fused_qkv(f"{src}/self_attention", f"{dst}.attn")
        # Cross-attention: linear_0 is the query, linear_1 is [k; v] from the encoder
        # output, linear_2 the output projection.
        cross = f"{src}/attention"
        yield from layer_norm(f"{cross}/layer_norm", f"{dst}.cross_attn_ln", state)
        yield from linear(f"{cross}/linear_0", f"{dst}.cross_attn.query", state, state)
        kv_w = take(f"{cross}/linear_1/weight", (2 * state, state))
        kv_b = take(f"{cross}/linear_1/bias", (2 * state,))
        zero_key_bias(f"{cross}/linear_1/bias", kv_b[:state])
        yield f"{dst}.cross_attn.key.weight", kv_w[:state], "weight"
        yield f"{dst}.cross_attn.value.weight", kv_w[state:], "weight"
        yield f"{dst}.cross_attn.value.bias", kv_b[state:], "f32"
        yield from linear(f"{cross}/linear_2", f"{dst}.cross_attn.out", state, state)

    unknown = sorted(set(variables) - used)
    if unknown:
        raise ConversionError(f"variables this converter does not understand: {unknown[:8]}")


def check_configuration(variables):
    """Refuse models whose architecture differs from what whisper.cpp computes."""
    expected = {
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
        "decoder/activation": 3,  # GELU (ctranslate2 ActivationType::GELU)
    }
    for name, value in expected.items():
        if name in variables and scalar(variables, name) != value:
            raise ConversionError(f"{name} = {scalar(variables, name)}, whisper.cpp needs {value}")
    tied = variables.get("decoder/projection/weight")
    if tied is not None and tied is not variables.get("decoder/embeddings/weight"):
        if not np.array_equal(tied, variables["decoder/embeddings/weight"]):
            raise ConversionError("the output projection is not tied to the token embedding")


# --------------------------------------------------------------------------------------
# Mel filters and vocabulary
# --------------------------------------------------------------------------------------


def mel_filters(n_mels, sample_rate=16000, n_fft=400):
    """Slaney-style mel filter bank, normalised to constant area per band.

    This is the filter bank of librosa.filters.mel(sr, n_fft, n_mels) with its defaults
    (htk=False, norm="slaney"), which is what openai-whisper ships as mel_filters.npz.
    """
    f_min, f_max = 0.0, sample_rate / 2
    f_sp = 200.0 / 3  # linear region: 66.67 Hz per mel below 1 kHz
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(hz):
        hz = np.asanyarray(hz, dtype=np.float64)
        mel = hz / f_sp
        log_region = hz >= min_log_hz
        mel = np.where(log_region, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mel)
        return mel

    def mel_to_hz(mel):
        mel = np.asanyarray(mel, dtype=np.float64)
        hz = f_sp * mel
        log_region = mel >= min_log_mel
        return np.where(log_region, min_log_hz * np.exp(logstep * (mel - min_log_mel)), hz)

    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    fdiff = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2 : n_mels + 2] - mel_points[:n_mels]))[:, None]
    return weights.astype(np.float32)


def gpt2_unicode_to_bytes():
    """Inverse of GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to
    code points from 256 up, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1))
    printable += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def read_vocabulary(text, n_vocab):
    """Tokens up to (not including) <|endoftext|>, as raw bytes."""
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    try:
        end = tokens.index("<|endoftext|>")
    except ValueError:
        raise ConversionError("vocabulary.txt has no <|endoftext|> token") from None
    if len(tokens) != n_vocab:
        raise ConversionError(f"vocabulary.txt has {len(tokens)} tokens, the embedding {n_vocab} rows")
    table = gpt2_unicode_to_bytes()
    out = []
    for i, token in enumerate(tokens[:end]):
        try:
            out.append(bytes(table[c] for c in token))
        except KeyError as e:
            raise ConversionError(f"token {i} {token!r} is not in GPT-2's byte alphabet: {e}") from None
    return out


# --------------------------------------------------------------------------------------
# Quantization (ggml-quants.c reference kernels: quantize_row_*_ref)
# --------------------------------------------------------------------------------------


def _blocks(x):
    if x.shape[-1] % 32:
        raise ConversionError(f"rows of {x.shape[-1]} cannot be split into blocks of 32")
    return x.reshape(-1, 32).astype(np.float32)


def _signed_absmax(b):
    idx = np.argmax(np.abs(b), axis=1)
    return b[np.arange(len(b)), idx]


def quantize_q8_0(x):
    b = _blocks(x)
    d = np.abs(b).max(axis=1) / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    q = _round_half_away(b * inv[:, None]).astype(np.int8)  # C roundf: half away from zero
    out = np.empty(len(b), dtype=[("d", "<f2"), ("qs", "i1", 32)])
    out["d"], out["qs"] = d.astype(np.float16), q
    return out.tobytes()


def _round_half_away(v):
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _pack_nibbles(lo, hi):
    return ((lo & 0x0F) | ((hi & 0x0F) << 4)).astype(np.uint8)


def quantize_q4_0(x):
    b = _blocks(x)
    m = _signed_absmax(b)
    d = m / -8.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    xi = np.minimum(15, np.trunc(b * inv[:, None] + 8.5)).astype(np.int32)
    out = np.empty(len(b), dtype=[("d", "<f2"), ("qs", "u1", 16)])
    out["d"], out["qs"] = d.astype(np.float16), _pack_nibbles(xi[:, :16], xi[:, 16:])
    return out.tobytes()


def quantize_q5_0(x):
    b = _blocks(x)
    m = _signed_absmax(b)
    d = m / -16.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    xi = np.minimum(31, np.trunc(b * inv[:, None] + 16.5)).astype(np.uint32)
    high = (xi >> 4) & 1  # fifth bit of element j (0..31) goes to bit j of qh
    qh = (high << np.arange(32, dtype=np.uint32)).sum(axis=1).astype("<u4")
    out = np.empty(len(b), dtype=[("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])
    out["d"], out["qh"], out["qs"] = d.astype(np.float16), qh, _pack_nibbles(xi[:, :16], xi[:, 16:])
    return out.tobytes()


QUANTIZERS = {"q8_0": quantize_q8_0, "q5_0": quantize_q5_0, "q4_0": quantize_q4_0}


# --------------------------------------------------------------------------------------
# ggml writer
# --------------------------------------------------------------------------------------


def convert(model_bin, vocabulary_text, out, weight_type="f16"):
    """Convert; ``out`` is a binary file object. Returns the hparams written."""
    if weight_type not in WEIGHT_TYPES:
        raise ConversionError(f"unknown weight type {weight_type!r}; choose from {sorted(WEIGHT_TYPES)}")
    wtype, ftype, _, _ = WEIGHT_TYPES[weight_type]
    variables = read_ct2(model_bin)
    dequantize_int8(variables)
    check_configuration(variables)
    hp = hparams_of(variables)
    vocab = read_vocabulary(vocabulary_text, hp["n_vocab"])

    header_ftype = ftype + (GGML_QNT_VERSION * GGML_QNT_VERSION_FACTOR if weight_type != "f16" else 0)
    out.write(struct.pack("<I", GGML_MAGIC))
    for key in (
        "n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer",
        "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels",
    ):
        out.write(struct.pack("<i", hp[key]))
    out.write(struct.pack("<i", header_ftype))

    filters = mel_filters(hp["n_mels"])
    out.write(struct.pack("<ii", *filters.shape))
    out.write(filters.astype("<f4").tobytes())

    out.write(struct.pack("<i", len(vocab)))
    for token in vocab:
        out.write(struct.pack("<I", len(token)))
        out.write(token)

    for name, array, kind in ggml_tensors(variables, hp):
        if kind == "f32":
            ttype, data = GGML_TYPE_F32, array.astype("<f4").tobytes()
        elif kind == "conv" or weight_type == "f16":
            ttype, data = GGML_TYPE_F16, array.astype("<f2").tobytes()
        else:
            ttype, data = wtype, QUANTIZERS[weight_type](array)
        encoded = name.encode("utf-8")
        dims = list(reversed(array.shape))
        out.write(struct.pack("<iii", len(dims), len(encoded), ttype))
        out.write(struct.pack("<" + "i" * len(dims), *dims))
        out.write(encoded)
        out.write(data)
    return hp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-bin", action="append", required=True, help="model.bin (or its parts, in order)")
    parser.add_argument("--vocabulary", required=True, help="vocabulary.txt of the same model")
    parser.add_argument("--output", required=True)
    parser.add_argument("--type", default="f16", choices=sorted(WEIGHT_TYPES))
    args = parser.parse_args(argv)
    data = b"".join(open(p, "rb").read() for p in args.model_bin)
    with open(args.vocabulary, encoding="utf-8") as f:
        vocabulary = f.read()
    tmp = args.output + ".partial"
    try:
        with open(tmp, "wb") as out:
            hp = convert(data, vocabulary, out, args.type)
    except ConversionError as e:
        print(f"ct2_to_ggml: {e}", file=sys.stderr)
        return 1
    os.replace(tmp, args.output)
    print(
        f"ct2_to_ggml: wrote {args.output} ({args.type}, {hp['n_audio_layer']}+{hp['n_text_layer']} layers, "
        f"width {hp['n_audio_state']}, vocab {hp['n_vocab']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
