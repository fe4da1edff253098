#!/usr/bin/env python3
"""Writes the committed seed corpus under fuzz/corpus/ (small, hand-made, deterministic).

client_message: the client messages of docs/protocol.md, plus a few near misses.
wav: tiny WAV files of every layout the decoder reads, and chunk-walking cases.
pcm: inputs for fuzz_targets/pcm.rs: a flags byte, a rate (2 bytes), then frames, each a
length byte and its bytes.

Run from anywhere: python3 fuzz/make-seeds.py
"""

import math
import struct
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


# --- client_message --------------------------------------------------------------------

MESSAGES = {
    "start_stream_full.json": """{
  "type": "start_stream",
  "source_lang": "en",
  "target_lang": "pt",
  "audio_format": { "encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1 },
  "interim_results": true,
  "tts": false,
  "task": "transcribe"
}""",
    "start_stream_min.json": '{"type": "start_stream", "source_lang": "auto", "audio_format": '
    '{"encoding": "pcm_f32le", "sample_rate": 48000, "channels": 2}}',
    "start_stream_bad_rate.json": '{"type":"start_stream","source_lang":"es","task":"translate",'
    '"audio_format":{"encoding":"pcm_s16le","sample_rate":4294967295,"channels":65535}}',
    "audio_chunk.json": '{"type": "audio_chunk", "chunk_id": 0, "audio_data": "AAB4AKz+AAKz/wkA", '
    '"timestamp": 1718000000123, "is_final": false}',
    "audio_chunk_final.json": '{"type":"audio_chunk","chunk_id":18446744073709551615,'
    '"audio_data":"AAAAAA==","is_final":true}',
    "audio_chunk_bad_base64.json": '{"type":"audio_chunk","chunk_id":1,"audio_data":"%%%"}',
    "end_stream.json": '{"type": "end_stream"}',
    "ping.json": '{"type": "ping", "id": 17}',
    "ping_bare.json": '{"type":"ping"}',
    "unknown_type.json": '{"type":"start_streaming","source_lang":"en"}',
    "unknown_field.json": '{"type":"end_stream","now":true}',
    "escapes.json": '{"type":"start_stream","source_lang":"\\u00e9\\n\\"","audio_format":'
    '{"encoding":"pcm_s16le","sample_rate":8000,"channels":1}}',
}
for name, text in MESSAGES.items():
    write("client_message", name, text)


# --- wav -------------------------------------------------------------------------------


def chunk(cid, body):
    pad = b"\0" if len(body) % 2 else b""
    return cid + struct.pack("<I", len(body)) + body + pad


def fmt_body(tag, channels, rate, bits, extensible_tag=None):
    align = channels * (bits // 8)
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    if extensible_tag is not None:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        body += struct.pack("<HHI", 22, bits, 0x3) + struct.pack("<H", extensible_tag) + guid_tail
    return body


def riff(*chunks, size=None):
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body) if size is None else size) + body


def tone(n, channels):
    return [0.5 * math.sin(2 * math.pi * 440 * i / 8000) for i in range(n * channels)]


def samples(values, bits, fmt):
    if fmt == "float":
        code = "<f" if bits == 32 else "<d"
        return b"".join(struct.pack(code, v) for v in values)
    out = b""
    for v in values:
        if bits == 8:
            out += bytes([int(round(v * 127)) + 128])
        elif bits == 16:
            out += struct.pack("<h", int(round(v * 32767)))
        elif bits == 24:
            out += struct.pack("<i", int(round(v * 8388607)))[:3]
        else:
            out += struct.pack("<i", int(round(v * 2147483647)))
    return out


for name, tag, ch, rate, bits, kind, ext in [
    ("u8_mono_8k.wav", 1, 1, 8000, 8, "int", None),
    ("s16_stereo_44k.wav", 1, 2, 44100, 16, "int", None),
    ("s24_ext_3ch_16k.wav", 0xFFFE, 3, 16000, 24, "int", 1),
    ("s32_mono_48k.wav", 1, 1, 48000, 32, "int", None),
    ("f32_mono_16k.wav", 3, 1, 16000, 32, "float", None),
    ("f64_ext_stereo_22k.wav", 0xFFFE, 2, 22050, 64, "float", 3),
    ("s16_mono_1k.wav", 1, 1, 1000, 16, "int", None),
    ("s16_mono_384k.wav", 1, 1, 384000, 16, "int", None),
]:
    data = samples(tone(24, ch), bits, kind)
    write("wav", name, riff(chunk(b"fmt ", fmt_body(tag, ch, rate, bits, ext)), chunk(b"data", data)))

s16 = fmt_body(1, 1, 16000, 16)
pcm = samples(tone(16, 1), 16, "int")
# Chunks the decoder must walk past: LIST before fmt, an odd-length chunk and its pad byte.
write("wav", "list_and_odd_chunk.wav", riff(chunk(b"LIST", b"INFOISFT\x03\0\0\0ab\0"), chunk(b"fmt ", s16), chunk(b"junk", b"x"), chunk(b"data", pcm)))
# A streaming writer's sizes: 0xFFFFFFFF for RIFF and data.
write("wav", "streaming_sizes.wav", b"RIFF\xff\xff\xff\xffWAVE" + chunk(b"fmt ", s16) + b"data\xff\xff\xff\xff" + pcm)
# Data size 0 (also "take what is there"), and a data chunk claiming more than there is.
write("wav", "data_size_zero.wav", b"RIFF\0\0\0\0WAVE" + chunk(b"fmt ", s16) + b"data\0\0\0\0" + pcm)
write("wav", "truncated_data.wav", riff(chunk(b"fmt ", s16)) + b"data\x00\x10\x00\x00" + pcm)
# A huge claimed fmt size, data before fmt, and compressed / unsupported formats.
write("wav", "huge_fmt.wav", b"RIFF\x24\0\0\0WAVEfmt \xf0\xff\xff\x7f" + s16)
write("wav", "data_before_fmt.wav", riff(chunk(b"data", pcm), chunk(b"fmt ", s16)))
write("wav", "mulaw.wav", riff(chunk(b"fmt ", fmt_body(7, 1, 8000, 8)), chunk(b"data", b"\x7f" * 8)))
write("wav", "odd_block_align.wav", riff(chunk(b"fmt ", struct.pack("<HHIIHH", 1, 2, 8000, 16000, 3, 16)), chunk(b"data", pcm)))


# --- pcm -------------------------------------------------------------------------------


def pcm_input(flags, rate, frames):
    # fuzz_targets/pcm.rs: rate = 8000 + raw * 7 % 40001; pick raw for the wanted rate.
    raw = next(r for r in range(65536) if 8000 + r * 7 % 40001 == rate)
    out = bytes([flags]) + struct.pack(">H", raw)
    for f in frames:
        out += bytes([len(f)]) + f
    return out


write("pcm", "s16_mono_16k", pcm_input(0, 16000, [samples(tone(40, 1), 16, "int")[:80], b"\x01\x00" * 10]))
write("pcm", "s16_stereo_48k", pcm_input(2, 48000, [samples(tone(30, 2), 16, "int")[:120], b"\0\0\0"]))
write("pcm", "f32_mono_8k", pcm_input(1, 8000, [samples(tone(12, 1), 32, "float"), struct.pack("<3f", float("nan"), 2.0, -1e30)]))
write("pcm", "f32_stereo_44k", pcm_input(3, 44100, [samples(tone(8, 2), 32, "float"), b"\0" * 7, b"\0" * 16]))
