//! The scheduler: watches pods without a node and binds each to the best node that fits.

pub mod plan;
#[cfg(test)]
mod tests;
