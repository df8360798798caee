//! A polled driver for the Arm CMSDK APB UART (MPS2 boards, QEMU's
//! `mps2-an386`) implementing the blocking `embedded-io` traits, so the
//! device client can use it as its transport.
//!
//! Registers (Arm CMSDK technical reference): DATA at +0x00, STATE at +0x04
//! (bit 0 TX full, bit 1 RX full), CTRL at +0x08 (bit 0 TX enable, bit 1
//! RX enable), BAUDDIV at +0x10. No interrupts, no DMA.

use embedded_io::{ErrorType, Read, Write};

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_RX_ENABLE: u32 = 0b11;
/// Smallest divider the UART accepts (the line rate does not matter under
/// QEMU; on hardware derive it from the clock).
const BAUDDIV_MIN: u32 = 16;

/// One CMSDK UART at a fixed base address.
pub struct CmsdkUart {
    base: usize,
}

impl CmsdkUart {
    /// The UART whose registers start at `base`.
    pub const fn new(base: usize) -> Self {
        CmsdkUart { base }
    }

    /// Enables transmitter and receiver.
    pub fn enable(&mut self) {
        self.write_reg(BAUDDIV, BAUDDIV_MIN);
        self.write_reg(CTRL, CTRL_TX_RX_ENABLE);
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `base` is the UART's MMIO block (fixed by the board), the
        // offset is one of its 32-bit registers, and MMIO must be read with
        // volatile accesses.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&mut self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`; `&mut self` makes this the only writer.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }
}

impl ErrorType for CmsdkUart {
    type Error = core::convert::Infallible;
}

impl Read for CmsdkUart {
    /// Blocks until at least one byte arrived, then takes what is there.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        while n < buf.len() {
            if self.read_reg(STATE) & STATE_RX_FULL == 0 {
                if n > 0 {
                    break;
                }
                continue;
            }
            buf[n] = (self.read_reg(DATA) & 0xff) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl Write for CmsdkUart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &byte in buf {
            while self.read_reg(STATE) & STATE_TX_FULL != 0 {}
            self.write_reg(DATA, u32::from(byte));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
