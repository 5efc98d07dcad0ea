"""The voice worker tests use the real SIP peers of tests/voice."""

from tests.voice.conftest import (  # noqa: F401 (fixtures)
    baresip_available,
    pcap_playback,
    peers,
    sipp_available,
    speech_wav,
    tone_wav,
)
