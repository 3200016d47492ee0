"""PCM16 mono sample-rate conversion with the standard library only.

Rules of this file:
- Samples are 16-bit little-endian, as in WAV; the gateway runs on
  little-endian hosts (x86-64, arm64), so native order is WAV order.
- Going down (espeak-ng's 22050 Hz to 8000 or 16000) first low-passes at
  0.45 x the new rate with a windowed-sinc FIR, so fricatives above the new
  Nyquist frequency do not fold back into the telephone band. Going up needs
  no filter.
- With `audioop` (Python 3.11 and 3.12) the filter is a sum of shifted,
  scaled copies of the signal (each `audioop.mul`/`audioop.add` pass runs in
  C) and `audioop.ratecv` interpolates. Without it (removed in 3.13) a
  moving average and linear interpolation over `array('h')` do the same job,
  slower and coarser.
"""

from __future__ import annotations

import functools
import math
import warnings
from array import array

with warnings.catch_warnings():
    # audioop is deprecated since 3.11 and removed in 3.13 (PEP 594); the
    # array fallback below takes over when the import fails.
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop as _audioop
    except ImportError:  # Python 3.13 and later
        _audioop = None  # type: ignore[assignment]

HAVE_AUDIOOP = _audioop is not None
HALF_TAPS = 24  # 49 taps: a ~1.5 kHz transition band at 22050 Hz
CUTOFF_RATIO = 0.45  # of the output rate: just under its Nyquist frequency


@functools.cache
def lowpass_taps(rate: int, cutoff: float, half: int = HALF_TAPS) -> tuple[float, ...]:
    """A Hamming-windowed sinc low-pass at `cutoff` Hz, unity gain at DC."""
    fc = cutoff / rate
    taps = []
    for n in range(-half, half + 1):
        ideal = 2 * fc if n == 0 else math.sin(2 * math.pi * fc * n) / (math.pi * n)
        taps.append(ideal * (0.54 + 0.46 * math.cos(math.pi * n / half)))
    total = sum(taps)
    return tuple(t / total for t in taps)


def resample(pcm: bytes, inrate: int, outrate: int) -> bytes:
    """`pcm` (PCM16 mono at `inrate`) at `outrate`."""
    if inrate == outrate:
        return pcm
    if _audioop is None:
        return resample_linear(pcm, inrate, outrate)
    if outrate < inrate:
        pcm = _fir_audioop(pcm, lowpass_taps(inrate, CUTOFF_RATIO * outrate))
    converted, _ = _audioop.ratecv(pcm, 2, 1, inrate, outrate, None)
    return converted


def _fir_audioop(pcm: bytes, taps: tuple[float, ...]) -> bytes:
    """y[i] = sum(taps[k] * x[i + k - half]): one C pass per tap, zero-copy slices."""
    half = len(taps) // 2
    padded = memoryview(b"\0\0" * half + pcm + b"\0\0" * half)
    n = len(pcm)
    out = b"\0\0" * (n // 2)
    for k, tap in enumerate(taps):
        out = _audioop.add(out, _audioop.mul(padded[2 * k : 2 * k + n], 2, tap), 2)
    return out


def resample_linear(pcm: bytes, inrate: int, outrate: int) -> bytes:
    """The audioop-free path: moving average (when going down), then linear interpolation."""
    x = array("h")
    x.frombytes(pcm[: len(pcm) & ~1])
    if not x:
        return b""
    if outrate < inrate:
        # A box of ceil(inrate / outrate) samples: its first null sits near the new rate.
        width = math.ceil(inrate / outrate)
        running, smoothed = 0, array("h", bytes(2 * len(x)))
        for i, v in enumerate(x):
            running += v
            if i >= width:
                running -= x[i - width]
            smoothed[i] = running // min(i + 1, width)
        x = smoothed
    count = len(x) * outrate // inrate
    last = len(x) - 1
    step = inrate / outrate
    y = array("h", bytes(2 * count))
    for j in range(count):
        pos = j * step
        i = int(pos)
        frac = pos - i
        nxt = x[i + 1] if i < last else x[last]
        y[j] = round(x[i] + (nxt - x[i]) * frac)
    return y.tobytes()
