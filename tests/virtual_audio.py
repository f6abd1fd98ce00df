"""A virtual speaker and microphone for tests: a private PulseAudio server with two null sinks.

    speaker          the app plays here            (null sink "tidings_speaker", 24 kHz)
    speaker_monitor  the test hears what it played (that sink's monitor)
    mic_feed         the test speaks here          (null sink "tidings_mic", 16 kHz)
    mic              the app records here          (that sink's monitor)

PortAudio reaches them as ALSA devices of type pulse, defined in a file that
ALSA_CONFIG_PATH points at. Null sinks are clocked like real hardware, so
playback takes real time and a loopback is bit-exact.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class VirtualAudio:
    speaker: str
    speaker_monitor: str
    mic: str
    mic_feed: str


_PCMS = {  # ALSA device -> PulseAudio sink or source
    "tidings_speaker": "tidings_speaker",
    "tidings_speaker_monitor": "tidings_speaker.monitor",
    "tidings_mic": "tidings_mic.monitor",
    "tidings_mic_feed": "tidings_mic",
}


def _rescan_sound_devices() -> None:
    # PortAudio lists devices once, when it initializes: if sounddevice was
    # imported before, re-initialize it so it sees (or forgets) these devices.
    if "sounddevice" in sys.modules:
        sd = sys.modules["sounddevice"]
        sd._terminate()
        sd._initialize()


def _wait_until_up(server: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pulseaudio exited with {process.returncode}:\n{log.read_text()}")
        if subprocess.run(["pactl", "--server", server, "info"], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"pulseaudio did not come up within 20 s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.skip("no pulseaudio/pactl: ./setup.sh installs pulseaudio and pulseaudio-utils")
    home = tmp_path_factory.mktemp("pulse")
    server = f"unix:{home / 'native'}"
    log = home / "pulseaudio.log"
    # HOME and XDG_RUNTIME_DIR keep its state, cookie and sockets out of the real home.
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home), "XDG_CONFIG_HOME": str(home)}
    command = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit", "--use-pid-file=no",
               "-L", f"module-native-protocol-unix auth-anonymous=1 socket={home / 'native'}",
               "-L", "module-null-sink sink_name=tidings_speaker rate=24000 channels=1",
               "-L", "module-null-sink sink_name=tidings_mic rate=16000 channels=1"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(server, process, log)
        alsa_conf = home / "asound.conf"
        alsa_conf.write_text("</usr/share/alsa/alsa.conf>\n" + "".join(
            f'pcm.{pcm} {{ type pulse server "{server}" device "{target}" }}\n' for pcm, target in _PCMS.items()))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("ALSA_CONFIG_PATH", str(alsa_conf))
            _rescan_sound_devices()
            yield VirtualAudio(speaker="tidings_speaker", speaker_monitor="tidings_speaker_monitor",
                               mic="tidings_mic", mic_feed="tidings_mic_feed")
        _rescan_sound_devices()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
