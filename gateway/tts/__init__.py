"""The gateway's own prompt audio: text in, a cached WAV file out.

Asterisk (through ARI) plays prompts the gateway synthesises; FreeSWITCH
can too. `TtsService.prompt` turns (text, TTSConfig) into a `Prompt`, a
content-addressed WAV under the cache directory, served at
`/media/<name>` by gateway.tts.media. Engines implement `Synthesizer`
(gateway.tts.espeak is the built-in one). Rules of the cache are in
gateway.tts.service; docs/tts.md has the whole picture.
"""

from __future__ import annotations

from gateway.tts.base import Prompt, Synthesizer, TtsError
from gateway.tts.service import TtsService

__all__ = ["Prompt", "Synthesizer", "TtsError", "TtsService"]
