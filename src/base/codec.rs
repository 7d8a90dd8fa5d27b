//! The codecs camhub carries, video ([`Codec`]) and audio ([`AudioCodec`]), and every name each one goes by: the
//! contract's (`H264`, `AAC`), RTP's encoding name, GStreamer's media type and stream format, and the elements that
//! depayload, parse, payload and decode it. One table, so no module spells a codec name on its own.

/// A codec the hub carries (as `avc`/`hvc1` access units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    H264,
    H265,
}

impl Codec {
    pub const ALL: [Codec; 2] = [Codec::H264, Codec::H265];

    /// The name the API uses: `H264`, `H265`.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::H264 => "H264",
            Codec::H265 => "H265",
        }
    }

    /// From an RTP/SDP encoding name (`H264`, `h265`), any case.
    pub fn from_encoding_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(name))
    }

    /// From a GStreamer media type (`video/x-h264`).
    pub fn from_media_type(media_type: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.media_type() == media_type)
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Codec::H264 => "video/x-h264",
            Codec::H265 => "video/x-h265",
        }
    }

    /// The stream format of length-prefixed access units with parameter sets in `codec_data` (what MP4 stores).
    pub fn stream_format(self) -> &'static str {
        match self {
            Codec::H264 => "avc",
            Codec::H265 => "hvc1",
        }
    }

    pub fn depayloader(self) -> &'static str {
        match self {
            Codec::H264 => "rtph264depay",
            Codec::H265 => "rtph265depay",
        }
    }

    pub fn parser(self) -> &'static str {
        match self {
            Codec::H264 => "h264parse",
            Codec::H265 => "h265parse",
        }
    }

    pub fn payloader(self) -> &'static str {
        match self {
            Codec::H264 => "rtph264pay",
            Codec::H265 => "rtph265pay",
        }
    }

    pub fn decoder(self) -> &'static str {
        match self {
            Codec::H264 => "avdec_h264",
            Codec::H265 => "avdec_h265",
        }
    }
}

/// An audio codec the hub carries beside the video, as the camera sent it (never transcoded): AAC as raw access
/// units with its AudioSpecificConfig in the caps' `codec_data`, G.711 as 8-bit samples, Opus as the packets
/// `opusparse` frames (a WebRTC publisher's sound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    Aac,
    /// G.711 µ-law.
    Pcmu,
    /// G.711 A-law.
    Pcma,
    Opus,
}

impl AudioCodec {
    pub const ALL: [AudioCodec; 4] = [AudioCodec::Aac, AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus];

    /// The name the API and logs use: `AAC`, `PCMU`, `PCMA`, `OPUS`.
    pub fn as_str(self) -> &'static str {
        match self {
            AudioCodec::Aac => "AAC",
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::Opus => "OPUS",
        }
    }

    /// The RTP/SDP encoding name (AAC as RFC 3640 `MPEG4-GENERIC`).
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Aac => "MPEG4-GENERIC",
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::Opus => "OPUS",
        }
    }

    /// From an RTP/SDP encoding name (`mpeg4-generic`, `PCMU`), any case.
    pub fn from_encoding_name(name: &str) -> Option<AudioCodec> {
        AudioCodec::ALL.into_iter().find(|c| c.encoding_name().eq_ignore_ascii_case(name))
    }

    /// GStreamer's media type. `audio/mpeg` also names MP3 and other MPEG audio: its caps are AAC only with
    /// `mpegversion=4` (see `media::audio_codec_of`).
    pub fn media_type(self) -> &'static str {
        match self {
            AudioCodec::Aac => "audio/mpeg",
            AudioCodec::Pcmu => "audio/x-mulaw",
            AudioCodec::Pcma => "audio/x-alaw",
            AudioCodec::Opus => "audio/x-opus",
        }
    }

    pub fn depayloader(self) -> &'static str {
        match self {
            AudioCodec::Aac => "rtpmp4gdepay",
            AudioCodec::Pcmu => "rtppcmudepay",
            AudioCodec::Pcma => "rtppcmadepay",
            AudioCodec::Opus => "rtpopusdepay",
        }
    }

    pub fn payloader(self) -> &'static str {
        match self {
            AudioCodec::Aac => "rtpmp4gpay",
            AudioCodec::Pcmu => "rtppcmupay",
            AudioCodec::Pcma => "rtppcmapay",
            AudioCodec::Opus => "rtpopuspay",
        }
    }

    pub fn decoder(self) -> &'static str {
        match self {
            AudioCodec::Aac => "avdec_aac",
            AudioCodec::Pcmu => "mulawdec",
            AudioCodec::Pcma => "alawdec",
            AudioCodec::Opus => "opusdec",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Codec::ALL {
            assert_eq!(Codec::from_encoding_name(&c.as_str().to_ascii_lowercase()), Some(c));
            assert_eq!(Codec::from_media_type(c.media_type()), Some(c));
        }
        assert_eq!(Codec::from_encoding_name("VP8"), None);
        for c in AudioCodec::ALL {
            assert_eq!(AudioCodec::from_encoding_name(&c.encoding_name().to_ascii_lowercase()), Some(c));
        }
        assert_eq!(AudioCodec::from_encoding_name("opus"), Some(AudioCodec::Opus));
        assert_eq!(AudioCodec::from_encoding_name("speex"), None);
    }
}
