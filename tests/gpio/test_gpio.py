"""Cabinet GPIO on gpiozero's MockFactory: flash pulse width and count, LED patterns with their
timings (from the pins' state history), relay, tamper edges with debounce, bad input."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from device.config import GpioConfig
from device.sensors.gpio import UnitGpio

FLASH, OK, FAULT, RELAY, TAMPER = 17, 22, 23, 24, 25


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


def make(factory, **kw):
    base = dict(
        enabled=True, flash_pin=FLASH, led_ok_pin=OK, led_fault_pin=FAULT, relay_pin=RELAY, tamper_pin=TAMPER
    )
    base.update(kw)
    events: list[bool] = []
    return UnitGpio(GpioConfig(**base), pin_factory=factory, on_tamper=events.append), events


def transitions(pin):
    """(state, seconds since previous change) after the initial entry."""
    return [(s.state, s.timestamp) for s in pin.states[1:]]


def test_flash_pulses_have_the_configured_width(factory):
    gpio, _ = make(factory, flash_pulse_ms=3.0)
    pin = factory.pin(FLASH)
    assert pin.state is False
    pin.clear_states()
    t0 = time.monotonic_ns()
    t_edge = gpio.flash()
    assert t_edge is not None and t_edge >= t0
    wait_for(lambda: len(pin.states) >= 3)
    tr = transitions(pin)
    assert [s for s, _ in tr] == [True, False]
    width = tr[1][1]
    assert 0.003 <= width < 0.1  # never shorter than configured; scheduler jitter only adds
    # a second capture: a second pulse
    pin.clear_states()
    gpio.flash()
    wait_for(lambda: len(pin.states) >= 3)
    assert [s for s, _ in transitions(pin)] == [True, False]
    assert gpio.flashes == 2 and pin.state is False
    gpio.close()


def test_status_led_patterns(factory):
    gpio, _ = make(factory)
    ok, fault = factory.pin(OK), factory.pin(FAULT)
    gpio.set_status("ok")
    assert ok.state is True and fault.state is False
    ok.clear_states()
    gpio.set_status("degraded")
    wait_for(lambda: len(ok.states) >= 5)  # off->on->off->on: at least two full periods seen
    tr = transitions(ok)
    on_times = [dt for (s, dt), (ps, _) in zip(tr[1:], tr, strict=False) if s is False and ps is True]
    off_times = [dt for (s, dt), (ps, _) in zip(tr[1:], tr, strict=False) if s is True and ps is False]
    assert on_times and off_times
    assert all(0.45 <= t < 0.8 for t in on_times + off_times), tr  # 1 Hz blink, 0.5 s each
    assert fault.state is False
    gpio.set_status("fault")
    assert fault.state is True
    wait_for(lambda: ok.state is False)
    assert gpio.status == "fault"
    with pytest.raises(ValueError, match="status must be one of"):
        gpio.set_status("broken")  # type: ignore[arg-type]
    assert gpio.status == "fault" and fault.state is True  # bad input changes nothing
    gpio.close()


def test_fault_on_a_single_led_is_a_fast_blink(factory):
    gpio, _ = make(factory, led_fault_pin=None)
    ok = factory.pin(OK)
    ok.clear_states()
    gpio.set_status("fault")
    wait_for(lambda: len(ok.states) >= 5)
    times = [dt for _, dt in transitions(ok)[1:]]
    assert all(0.09 <= t < 0.4 for t in times), times
    gpio.close()


def test_relay(factory):
    gpio, _ = make(factory)
    assert gpio.relay_on is False and factory.pin(RELAY).state is False
    gpio.set_relay(True)
    assert gpio.relay_on is True and factory.pin(RELAY).state is True
    gpio.set_relay(False)
    assert factory.pin(RELAY).state is False
    gpio.close()


def test_tamper_active_low_door_switch(factory):
    gpio, events = make(factory, tamper_bounce_ms=0)
    pin = factory.pin(TAMPER)
    assert pin.state is True  # pulled up: door closed
    assert gpio.tamper_open is False
    pin.drive_low()
    wait_for(lambda: events == [True])
    assert gpio.tamper_open is True and gpio.health()["tamper_open"] is True
    pin.drive_high()
    wait_for(lambda: events == [True, False])
    assert gpio.tamper_open is False and gpio.tamper_events == 2
    gpio.close()


def test_tamper_active_high_switch(factory):
    gpio, events = make(factory, tamper_active_high=True, tamper_bounce_ms=0)
    pin = factory.pin(TAMPER)
    assert pin.state is False  # pulled down
    pin.drive_high()
    wait_for(lambda: events == [True])
    assert gpio.tamper_open is True
    gpio.close()


def test_unwired_pins_are_no_ops(factory):
    gpio = UnitGpio(GpioConfig(enabled=True), pin_factory=factory)
    assert gpio.flash() is None
    gpio.set_status("fault")
    gpio.set_relay(True)
    assert gpio.tamper_open is False and gpio.relay_on is False
    gpio.close()


def test_pin_conflict_is_an_error_and_releases_pins(factory):
    """Config validation refuses a shared pin; UnitGpio still fails cleanly on one (model_construct skips
    validation, as a config built in code could)."""
    with pytest.raises(ValueError, match=r"gpio\.led_ok_pin and gpio\.flash_pin both use BCM pin 5"):
        GpioConfig(enabled=True, flash_pin=5, led_ok_pin=5)
    clash = GpioConfig.model_construct(enabled=True, flash_pin=5, led_ok_pin=5)
    with pytest.raises(Exception):  # noqa: B017 - gpiozero raises its own GPIOPinInUse
        UnitGpio(clash, pin_factory=factory)
    gpio = UnitGpio(GpioConfig(enabled=True, flash_pin=5), pin_factory=factory)  # pin 5 was released
    gpio.close()


def test_config_mock_factory_and_validation():
    with UnitGpio(GpioConfig(enabled=True, pin_factory="mock", flash_pin=6)) as gpio:
        assert gpio.flash() is not None
    with pytest.raises(ValueError):
        GpioConfig(flash_pulse_ms=0)
    with pytest.raises(ValueError):
        GpioConfig(tamper_bounce_ms=-1)


def test_tamper_chatter_is_debounced(factory):
    gpio, events = make(factory, tamper_bounce_ms=40)
    pin = factory.pin(TAMPER)
    t0 = time.monotonic()
    for _ in range(3):  # contact bounce while the door opens
        pin.drive_low()
        pin.drive_high()
    pin.drive_low()
    wait_for(lambda: events == [True])
    assert time.monotonic() - t0 >= 0.04  # reported only after the window of quiet
    assert gpio.tamper_open is True and gpio.tamper_events == 1
    # a glitch that ends where it started reports nothing
    pin.drive_high()
    pin.drive_low()
    time.sleep(0.15)  # give a (wrong) timer every chance to fire before checking nothing happened
    assert events == [True] and gpio.tamper_open is True
    pin.drive_high()
    wait_for(lambda: events == [True, False])
    gpio.close()
