"""A VP8/VP9 WebM's alpha: which streams carry it, and the decoder that keeps it. Apart from
`sources.video_open` so that the index (`sources.video_index`) can ask while it reads packets."""

from __future__ import annotations

# VP8 and VP9 in WebM carry transparency as a second picture in each block's BlockAdditional (the
# track's AlphaMode 1: a sticker, an overlay, a Telegram video sticker). FFmpeg's own decoders
# drop it and show the colour under it (what the encoder kept: black, often); libvpx's decoders
# join it into yuva420p, for 8-bit 4:2:0 (the only alpha libvpx encodes), as browsers show it.
ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}
ALPHA_FORMAT = "yuva420p"
ALPHA_SIDE_DATA = "matroska_block_additional"  # where a WebM block keeps its alpha picture


def alpha_decoder_name(stream) -> str | None:
    """The libvpx decoder that keeps the alpha of a VP8/VP9 stream declaring one, else None.
    Whether its packets all carry their alpha is the index's to say (`VideoIndex.alpha`)."""
    codec = stream.codec_context
    name = ALPHA_DECODERS.get(codec.name) if codec is not None else None
    return name if name and codec.pix_fmt == "yuv420p" and stream_tag(stream, "ALPHA_MODE") == "1" else None


def carries_alpha(packet) -> bool:
    """Whether a demuxed packet carries a WebM alpha picture beside its own."""
    try:
        return bool(packet.has_sidedata(ALPHA_SIDE_DATA))
    except (AttributeError, ValueError):  # a PyAV without this side data's name
        return False


def decoded_format(stream, alpha: bool = False) -> str | None:
    """The pixel format the stream's frames come out in (`frame_decoder`), before any is decoded."""
    codec = stream.codec_context
    if alpha and alpha_decoder_name(stream):
        return ALPHA_FORMAT
    return codec.pix_fmt or (codec.format.name if codec.format else None)


def frame_decoder(stream, alpha: bool = False):
    """The decoder a stream's frames are decoded with: its own context, or libvpx's for a VP8/VP9
    whose every packet carries alpha (`alpha`: `VideoIndex.alpha`; libvpx refuses a packet without
    it once it has seen one, and a tag alone holds no alpha), set as `open_stream` sets the
    stream's own. Frame sizes and packet order are read with the stream's own (alpha changes neither)."""
    import av

    name = alpha_decoder_name(stream) if alpha else None
    if name is None:
        return stream.codec_context
    codec = av.codec.CodecContext.create(name, "r")
    codec.extradata = stream.codec_context.extradata
    codec.thread_type = "NONE"
    codec.flags |= av.codec.context.Flags.unaligned
    return codec


def stream_tag(stream, name: str) -> str | None:
    """A stream's tag `name`, also as Matroska gives it with a language (`DURATION-eng`)."""
    for key, value in stream.metadata.items():
        if key.upper() == name or key.upper().startswith(name + "-"):
            return value
    return None
