//! The video codecs camhub carries, and every name each one goes by: the contract's (`H264`), RTP's encoding name,
//! GStreamer's media type and stream format, and the elements that depayload, parse, payload and decode it. One
//! table, so no module spells a codec name on its own.

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
    }
}
