//! Prints the GPU adapter Metal Marlin would use and what it offers.
//!
//! ```sh
//! cargo run -p marlin-gpu --example adapter            # hardware GPUs only
//! cargo run -p marlin-gpu --example adapter -- --any   # software adapters (lavapipe) too
//! ```

use marlin_gpu::{AdapterChoice, Gpu};

fn main() {
    let choice = if std::env::args().any(|a| a == "--any") {
        AdapterChoice::Any
    } else {
        AdapterChoice::Hardware
    };
    match Gpu::new(choice) {
        Ok(gpu) => {
            println!("adapter: {}", gpu.adapter());
            println!("{:#?}", gpu.capabilities());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
