//! A Cortex-M4 sensor node: reads a (simulated) temperature once a second
//! and sends it to eddy with the `eddy-device` client, over a UART.
//!
//! The UART stands for the link a real node has to the network: a cellular
//! or Wi-Fi modem in transparent TCP/TLS mode, or a serial line to a
//! gateway. Under QEMU (`-machine mps2-an386`) the UART is a TCP socket to
//! eddy (see README.md), so this firmware really talks to a hub.
//!
//! Everything is static: no heap, a 16-reading outbox of ≤ 32-byte values,
//! and three small buffers lent to the client. When the link breaks the
//! outbox keeps the readings and the next session resends them; eddy's
//! idempotent producer makes sure none is stored twice.
//!
//! It deliberately does not implement TLS (use an embedded TLS stack, or a
//! modem that terminates TLS, as the transport) or a real sensor driver.

#![no_std]
#![no_main]

use core::fmt::Write as _;

use cortex_m_rt::entry;
use eddy_device::wire::batch::NO_TIMESTAMP;
use eddy_device::{Buffers, Config, Device};
use panic_halt as _;

mod uart;

/// The CMSDK APB UART0 of the MPS2 boards.
const UART0_BASE: usize = 0x4000_4000;
/// Readings kept while the link is down.
const OUTBOX_READINGS_MAX: usize = 16;
/// Longest reading value, in bytes.
const READING_BYTES_MAX: usize = 32;
/// Busy-wait between readings, in CPU cycles (≈ 1 s at 25 MHz).
const READING_INTERVAL_CYCLES: u32 = 25_000_000;

#[entry]
fn main() -> ! {
    let mut link = uart::CmsdkUart::new(UART0_BASE);
    link.enable();

    let mut frame = [0u8; 256];
    let mut batch = [0u8; 128];
    let mut response = [0u8; 512];
    let config = Config::new("m4-sensor-0001", "telemetry");
    let mut device: Device<'_, '_, OUTBOX_READINGS_MAX, READING_BYTES_MAX> = Device::new(
        config,
        Buffers {
            frame: &mut frame,
            batch: &mut batch,
            response: &mut response,
        },
    );

    let mut tick: u32 = 0;
    loop {
        let mut value: heapless::String<READING_BYTES_MAX> = heapless::String::new();
        // A slow saw-tooth between 18.0 and 25.9 °C stands in for a sensor.
        let tenths = 180 + (tick * 7) % 80;
        let _ = write!(value, "t={}.{} n={}", tenths / 10, tenths % 10, tick);
        if device.publish(value.as_bytes(), NO_TIMESTAMP).is_err() {
            // Outbox full while the link is down: keep the newest readings.
            device.drop_oldest();
            let _ = device.publish(value.as_bytes(), NO_TIMESTAMP);
        }
        tick = tick.wrapping_add(1);

        if !device.is_connected() && device.connect(&mut link).is_err() {
            cortex_m::asm::delay(READING_INTERVAL_CYCLES);
            continue;
        }
        // On an error the device disconnects itself; the readings stay in
        // the outbox and go out after the next connect.
        let _ = device.flush(&mut link);
        cortex_m::asm::delay(READING_INTERVAL_CYCLES);
    }
}
