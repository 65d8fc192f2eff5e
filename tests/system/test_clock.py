"""Clock sync sources (chronyc / timedatectl parsing, the real adjtimex) and jump detection."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from device.clock import (
    JUMP_HOLD_S,
    STA_NANO,
    STA_PPSSIGNAL,
    STA_PPSTIME,
    STA_UNSYNC,
    TIME_ERROR,
    Adjtimex,
    ClockMonitor,
    ClockSourceError,
    SyncState,
    adjtimex_raw,
    parse_chronyc_tracking,
    parse_timedatectl,
    read_adjtimex,
    reader_for,
    state_from_adjtimex,
)
from device.config import ClockConfig

# `chronyc -c tracking` as printed by chrony 4.x (Debian bookworm): ref id, name, stratum, ref time,
# system time, last offset, RMS offset, frequency, residual freq, skew, root delay, root dispersion,
# update interval, leap status.
CHRONY_NTP = (
    "C0A80001,192.168.0.1,3,1763772000.123456789,-0.000012345,0.000001234,0.000023456,"
    "-12.345,0.001,0.050,0.012345678,0.001234567,64.2,Normal\n"
)
CHRONY_GPS = (
    "47505300,GPS,1,1763772000.000000001,0.000000500,0.000000100,0.000000300,"
    "1.500,0.000,0.010,0.000000000,0.000015000,16.0,Normal\n"
)
CHRONY_PPS_BY_REFID = (
    "50505300,50505300,1,1763772000.000000001,0.000000200,0.000000100,0.000000300,"
    "1.500,0.000,0.010,0.000000000,0.000001000,16.0,Normal\n"
)
CHRONY_UNSYNC = (
    "00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,"
    "0.000,0.000,0.000,1.000000000,1.000000000,0.0,Not synchronised\n"
)


def fields(line: str) -> list[str]:
    return line.strip().split(",")


def test_chronyc_synchronised_ntp_with_error_bound_from_the_fields():
    st = parse_chronyc_tracking(CHRONY_NTP)
    f = fields(CHRONY_NTP)
    assert st.synchronized and st.source == "ntp" and st.method == "chrony"
    assert st.offset_ns == round(float(f[4]) * 1e9)
    expected_max = abs(float(f[4])) + float(f[10]) / 2 + float(f[11])
    assert st.max_error_ns == round(expected_max * 1e9)
    assert "stratum=3" in st.detail and "192.168.0.1" in st.detail


def test_chronyc_reference_clocks_are_named():
    assert parse_chronyc_tracking(CHRONY_GPS).source == "gps"
    assert parse_chronyc_tracking(CHRONY_PPS_BY_REFID).source == "pps"
    # chrony's default refids are the driver name plus a digit (PPS0, SHM0 for gpsd); before, they
    # were labelled "ntp", and a server whose address spells "NMEA" in ASCII (78.77.69.65) "gps"
    f = fields(CHRONY_GPS)
    for refid, name, source in (
        ("50505330", "PPS0", "pps"),
        ("53484D30", "SHM0", "gps"),
        ("4E4D4541", "78.77.69.65", "ntp"),
        ("58595A30", "XYZ0", "unknown"),
    ):
        line = ",".join([refid, name, *f[2:]])
        assert parse_chronyc_tracking(line).source == source, name
    # a leap state other than chrony's synchronised ones is not synchronised
    assert not parse_chronyc_tracking(",".join([*f[:13], "Invalid"])).synchronized


def test_chronyc_not_synchronised():
    st = parse_chronyc_tracking(CHRONY_UNSYNC)
    assert not st.synchronized and st.source == "none"


@pytest.mark.parametrize(
    "text",
    ["", "506 Cannot talk to daemon\n", CHRONY_NTP.replace(",3,", ",three,"), "a,b,c\n"],
)
def test_chronyc_garbage_is_a_clear_error(text):
    with pytest.raises(ClockSourceError, match="chronyc tracking"):
        parse_chronyc_tracking(text)


def test_timedatectl_parsing():
    assert parse_timedatectl("NTPSynchronized=yes\n").synchronized
    no = parse_timedatectl("NTPSynchronized=no\n")
    assert not no.synchronized and no.source == "none"
    with pytest.raises(ClockSourceError):
        parse_timedatectl("NTPSynchronized=maybe\n")
    with pytest.raises(ClockSourceError):
        parse_timedatectl("Failed to connect to bus: Host is down\n")


def test_adjtimex_on_this_machine_is_sane():
    raw = adjtimex_raw()
    assert 0 <= raw.state <= TIME_ERROR
    assert raw.maxerror_us >= 0 and raw.esterror_us >= 0
    st = read_adjtimex()
    assert st.method == "adjtimex"
    assert st.synchronized == (not raw.status & STA_UNSYNC and raw.state != TIME_ERROR)
    assert st.max_error_ns == raw.maxerror_us * 1000
    # The kernel caps maxerror at 16 s (NTP_PHASE_LIMIT) and sets STA_UNSYNC when it gets there.
    assert raw.maxerror_us <= 16_000_000


def test_state_from_adjtimex_flags():
    ok = state_from_adjtimex(Adjtimex(0, STA_NANO, 1500, 2000, 100))
    assert ok.synchronized and ok.source == "ntp" and ok.offset_ns == 1500 and ok.max_error_ns == 2_000_000
    assert not state_from_adjtimex(Adjtimex(0, STA_UNSYNC, 0, 16_000_000, 16_000_000)).synchronized
    assert not state_from_adjtimex(Adjtimex(TIME_ERROR, 0, 0, 10, 10)).synchronized
    assert state_from_adjtimex(Adjtimex(0, STA_PPSTIME | STA_PPSSIGNAL, 0, 10, 1)).source == "pps"


def test_auto_reads_something_on_linux():
    st = reader_for("auto")()
    assert st.method in ("chrony", "adjtimex")
    assert st.source in ("ntp", "gps", "pps", "rtc", "none", "unknown")


def test_unknown_source_and_bad_config_are_errors():
    with pytest.raises(ValueError):
        reader_for("sundial")
    with pytest.raises(ValidationError):
        ClockConfig(refresh_s=0)
    with pytest.raises(ValidationError):
        ClockConfig(source="sundial")


class SteppableClock:
    """Wall and monotonic clocks the test can step (what `date -s` or chrony makestep do)."""

    def __init__(self) -> None:
        self.mono = 5_000_000_000
        self.utc = 1_763_772_000_000_000_000

    def wall_ns(self) -> int:
        return self.utc

    def mono_ns(self) -> int:
        return self.mono

    def advance(self, ns: int) -> None:
        self.mono += ns
        self.utc += ns


def synced() -> SyncState:
    return SyncState(True, "ntp", "test", offset_ns=1000, max_error_ns=2_000_000)


def test_jump_above_threshold_fires_callback_with_both_offsets():
    clk = SteppableClock()
    jumps: list[tuple[int, int]] = []
    mon = ClockMonitor(
        ClockConfig(jump_threshold_ms=500),
        reader=synced,
        wall_ns=clk.wall_ns,
        mono_ns=clk.mono_ns,
        on_jump=lambda old, new: jumps.append((old, new)),
    )
    mon.refresh()
    base = clk.utc - clk.mono
    clk.advance(5_000_000_000)
    clk.utc += 100_000_000  # a 100 ms slew-sized change: not a jump
    mon.refresh()
    assert jumps == []
    clk.advance(5_000_000_000)
    clk.utc += 2_000_000_000  # stepped 2 s forward
    mon.refresh()
    assert jumps == [(base + 100_000_000, base + 2_100_000_000)]
    clk.utc -= 3_000_000_000  # and 3 s back
    mon.refresh()
    assert len(jumps) == 2 and jumps[1][1] - jumps[1][0] == -3_000_000_000
    assert mon.jumps == 2


def test_stamp_uses_cached_state_and_the_injected_clocks():
    clk = SteppableClock()
    calls = []

    def reader() -> SyncState:
        calls.append(1)
        return synced()

    mon = ClockMonitor(ClockConfig(), reader=reader, wall_ns=clk.wall_ns, mono_ns=clk.mono_ns)
    before = mon.stamp()
    assert not before.synchronized and before.source == "unknown"  # nothing read yet: not trusted
    mon.refresh()
    for _ in range(100):
        s = mon.stamp()
    assert len(calls) == 1  # stamps never call the source
    assert (s.utc_ns, s.mono_ns) == (clk.utc, clk.mono)
    assert s.synchronized and s.source == "ntp" and s.offset_ns == 1000 and s.max_error_ns == 2_000_000
    assert mon.utc_for_mono(clk.mono - 1_000) == clk.utc - 1_000


def test_error_bound_above_config_means_unsynchronised():
    mon = ClockMonitor(
        ClockConfig(max_error_ms=1.0),
        reader=lambda: SyncState(True, "ntp", "test", offset_ns=0, max_error_ns=5_000_000),
    )
    st = mon.refresh()
    assert not st.synchronized and "max error" in st.detail
    assert not mon.stamp().synchronized


def test_failing_source_means_unsynchronised_not_a_crash():
    def boom() -> SyncState:
        raise ClockSourceError("chronyc exit 1: 506 Cannot talk to daemon")

    mon = ClockMonitor(ClockConfig(), reader=boom)
    st = mon.refresh()
    assert not st.synchronized and st.method == "error" and "506" in st.detail


def test_failing_jump_callback_does_not_break_refresh():
    clk = SteppableClock()

    def bad(old: int, new: int) -> None:
        raise RuntimeError("outbox closed")

    mon = ClockMonitor(ClockConfig(), reader=synced, wall_ns=clk.wall_ns, mono_ns=clk.mono_ns, on_jump=bad)
    mon.refresh()
    clk.utc += 10_000_000_000
    st = mon.refresh()  # completes: the state is cached and the jump counted
    assert mon.state is st and mon.jumps == 1


def test_assume_sources():
    assert ClockMonitor(ClockConfig(source="assume-synced")).refresh().synchronized
    assert not ClockMonitor(ClockConfig(source="assume-unsynced")).refresh().synchronized


def test_maybe_refresh_follows_refresh_s():
    clk = SteppableClock()
    mon = ClockMonitor(ClockConfig(refresh_s=5.0), reader=synced, wall_ns=clk.wall_ns, mono_ns=clk.mono_ns)
    assert mon.maybe_refresh()
    clk.advance(4_000_000_000)
    assert not mon.maybe_refresh()
    clk.advance(1_500_000_000)
    assert mon.maybe_refresh()


def test_background_thread_refreshes_and_stops():
    count = 0
    third = threading.Event()

    def reader() -> SyncState:
        nonlocal count
        count += 1
        if count >= 3:
            third.set()
        return synced()

    mon = ClockMonitor(ClockConfig(refresh_s=0.01), reader=reader)
    with mon:
        assert third.wait(5.0)
    n = count
    mon.refresh()  # the thread is joined: only this explicit call counts now
    assert count == n + 1
    assert mon.status()["synchronized"] is True


def test_stamp_after_an_unreported_step_is_not_trusted():
    clk = SteppableClock()
    mon = ClockMonitor(
        ClockConfig(jump_threshold_ms=500), reader=synced, wall_ns=clk.wall_ns, mono_ns=clk.mono_ns
    )
    mon.refresh()
    clk.advance(1_000_000_000)
    clk.utc += 100_000_000  # slew-sized: still trusted
    assert mon.stamp().synchronized
    clk.utc += 1_000_000_000  # stepped, background refresh not run yet
    assert not mon.stamp().synchronized
    mon.refresh()  # reports the jump; a source that cannot say when it measured is not believed yet
    assert mon.jumps == 1 and not mon.stamp().synchronized and "stepped" in mon.state.detail
    clk.advance(int(JUMP_HOLD_S * 1e9) + 1)
    mon.refresh()  # long enough for the source to have polled again
    assert mon.stamp().synchronized


def test_after_a_step_chrony_is_trusted_once_it_has_measured_since():
    """`date -s +1h` under chrony: its next `tracking` still says Normal, stratum 2, a tiny correction
    (the last poll predates the step); only a reference time after the step vouches for the new clock."""
    clk = SteppableClock()
    ref = {"t": clk.utc}

    def chrony() -> SyncState:
        return SyncState(True, "ntp", "chrony", offset_ns=1000, max_error_ns=2_000_000, ref_time_ns=ref["t"])

    mon = ClockMonitor(
        ClockConfig(jump_threshold_ms=500), reader=chrony, wall_ns=clk.wall_ns, mono_ns=clk.mono_ns
    )
    mon.refresh()
    clk.advance(5_000_000_000)
    clk.utc += 3600 * 10**9  # an hour forward
    mon.refresh()
    assert not mon.stamp().synchronized  # the stale "Normal" is not believed
    clk.advance(5_000_000_000)
    mon.refresh()
    assert not mon.stamp().synchronized  # still no measurement since the step
    ref["t"] = clk.utc  # chrony polled (and would now report the hour as its correction)
    clk.advance(1_000_000)
    mon.refresh()
    assert mon.stamp().synchronized


def test_chrony_local_stratum_is_not_synchronisation():
    """`local stratum 10` (refid 127.127.1.1): chrony serving its own free-running clock."""
    line = (
        "7F7F0101,,10,1763772000.000000000,0.000000000,0.000000000,0.000000000,"
        "0.000,0.000,0.000,0.000000000,0.000000000,64.0,Normal\n"
    )
    st = parse_chronyc_tracking(line)
    assert not st.synchronized and st.source == "none" and "local clock" in st.detail
    assert parse_chronyc_tracking(CHRONY_NTP).ref_time_ns == 1763772000123456789


def _chrony_monitor(clk: SteppableClock, ref: dict[str, int | None], fail: dict[str, bool]) -> ClockMonitor:
    def chrony() -> SyncState:
        if fail["now"]:
            raise ClockSourceError("chronyc: 506 Cannot talk to daemon")
        return SyncState(True, "ntp", "chrony", offset_ns=1000, max_error_ns=2_000_000, ref_time_ns=ref["t"])

    return ClockMonitor(
        ClockConfig(jump_threshold_ms=500), reader=chrony, wall_ns=clk.wall_ns, mono_ns=clk.mono_ns
    )


def test_after_a_step_backwards_chrony_is_not_trusted_on_its_stale_measurement():
    """`date -s -1h` under chrony: the last poll's reference time (old wall time) is now an hour *ahead*
    of the clock, so "ref time later than the step" would vouch for a clock an hour wrong."""
    clk = SteppableClock()
    ref: dict[str, int | None] = {"t": clk.utc - 10_000_000_000}  # last poll 10 s ago
    mon = _chrony_monitor(clk, ref, {"now": False})
    mon.refresh()
    assert mon.stamp().synchronized
    clk.advance(5_000_000_000)
    clk.utc -= 3600 * 10**9  # an hour back
    for _ in range(3):
        mon.refresh()
        assert mon.jumps == 1 and not mon.stamp().synchronized and "stepped" in mon.state.detail
        clk.advance(5_000_000_000)
    ref["t"] = clk.utc - 1_000_000  # chrony polled after the step
    mon.refresh()
    assert mon.stamp().synchronized


def test_a_failed_read_at_the_step_does_not_make_the_stale_measurement_new():
    """The refresh that sees the step cannot read chrony: its next read (the pre-step poll) is still stale."""
    clk = SteppableClock()
    ref: dict[str, int | None] = {"t": clk.utc}
    fail = {"now": False}
    mon = _chrony_monitor(clk, ref, fail)
    mon.refresh()
    clk.advance(5_000_000_000)
    clk.utc -= 3600 * 10**9
    fail["now"] = True
    mon.refresh()
    assert mon.jumps == 1 and not mon.stamp().synchronized
    fail["now"] = False
    clk.advance(5_000_000_000)
    mon.refresh()
    assert not mon.stamp().synchronized
    ref["t"] = clk.utc
    mon.refresh()
    assert mon.stamp().synchronized
