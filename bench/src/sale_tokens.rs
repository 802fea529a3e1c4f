//! `bench sale-tokens`: what the anti-bot checks cost the gateway, and what a proof-of-work
//! puzzle costs a buyer. CPU only (no I/O is involved in either check), timed on this
//! process with many repetitions; compare figures from one run, on one machine.

use std::time::{Duration, Instant};

use order_core::domain::sale_access::{solve_puzzle, SaleKey};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Checks timed per kind.
    #[arg(long, default_value_t = 200_000)]
    checks: u32,
    /// Puzzles solved per difficulty.
    #[arg(long, default_value_t = 8)]
    puzzles: u32,
    /// Difficulties to solve, in leading zero bits.
    #[arg(long, value_delimiter = ',', default_value = "12,16,20")]
    difficulties: Vec<u8>,
}

fn per_op(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(n)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let key = SaleKey::new(b"bench-sale-token-key-0123456789-abcdef");
    let far = i64::MAX / 2;
    let token = key.mint_token(7, 42, far);
    let started = Instant::now();
    let mut good = 0u32;
    for i in 0..args.checks {
        // The buyer varies so the check cannot be hoisted out of the loop.
        good += u32::from(key.verify_token(&token, 7, 42 + i64::from(i % 2), 0).is_ok());
    }
    let token_us = per_op(started.elapsed(), args.checks);
    anyhow::ensure!(good == args.checks.div_ceil(2), "the token check miscounted");

    let puzzle = key.issue_puzzle(7, 42, far, 16);
    let nonce = solve_puzzle(&puzzle).ok_or_else(|| anyhow::anyhow!("no solution"))?;
    let started = Instant::now();
    let mut solved = 0u32;
    for _ in 0..args.checks {
        solved += u32::from(key.verify_solution(&puzzle, nonce, 7, 42, 16, 0).is_ok());
    }
    let puzzle_us = per_op(started.elapsed(), args.checks);
    anyhow::ensure!(solved == args.checks, "a solved puzzle was refused");

    println!("| what | cost |");
    println!("|---|---|");
    println!("| sale token check (gateway, per order) | {token_us:.2} µs |");
    println!("| puzzle solution check (gateway, per token request) | {puzzle_us:.2} µs |");
    for difficulty in &args.difficulties {
        let started = Instant::now();
        let mut nonces = 0u64;
        for user in 0..args.puzzles {
            let puzzle = key.issue_puzzle(7, i64::from(user), far, *difficulty);
            nonces += solve_puzzle(&puzzle).ok_or_else(|| anyhow::anyhow!("no solution"))? + 1;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / f64::from(args.puzzles);
        println!(
            "| solving a difficulty-{difficulty} puzzle (buyer, mean of {}) | {ms:.1} ms, {:.0} hashes |",
            args.puzzles,
            nonces as f64 / f64::from(args.puzzles)
        );
    }
    Ok(())
}
