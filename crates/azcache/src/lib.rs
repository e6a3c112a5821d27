//! The client side of the AZ cache cluster (DESIGN.md section 4).
//!
//! * [`stripe`]: a chunk is erasure coded into `k` data and `m` parity
//!   [`Stripes`] ([`encode`] / [`decode`]); XOR parity for `m = 1` (the
//!   paper's 4 + 1), Reed-Solomon beyond. Each stripe carries a checksummed
//!   header, so a bad stripe is caught on its own.
//! * [`placement`]: rendezvous hashing puts the `k + m` stripes of a chunk
//!   on distinct nodes; every client agrees without coordination, and a
//!   node joining or leaving moves about `1/N` of the stripes.
//! * [`AzClient`]: talks HTTP/2 (h2c) to the nodes, one multiplexed
//!   connection each. A read asks all `k + m` nodes and rebuilds from the
//!   first `k` valid stripes, checked against the chunk's name; a miss, or
//!   anything that cannot be verified, is `Ok(None)` and the caller goes to
//!   the origin, then [`AzClient::fill`]s the cache in the background.
//!
//! ```
//! use kindling_azcache::{decode, encode, Stripes};
//! let s: Stripes = "4+2".parse().unwrap();
//! let chunk = vec![42u8; 100_000];
//! let stripes = encode(&chunk, s);
//! // Any 4 of the 6 stripes will do.
//! let some: Vec<_> = [5u8, 1, 4, 2].iter().map(|&i| (i, stripes[i as usize].clone())).collect();
//! assert_eq!(decode(&some, s).unwrap(), chunk);
//! ```
//!
//! The node protocol: `PUT /v1/stripes/{name_hex}/{index}` (body: the
//! stripe, at most 1 MiB) answers 204; `GET` the same answers 200 with the
//! stripe or 404; `HEAD` answers 200 or 404; `GET /health` answers 200.

mod client;
mod node;
pub mod placement;
pub mod stripe;

pub use client::{AzClient, AzError, ClientConfig, ClientStats};
pub use node::MAX_STRIPE_BYTES;
pub use placement::{place, Placement, PlacementError};
pub use stripe::{decode, encode, StripeError, Stripes};
