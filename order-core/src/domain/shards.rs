//! A hot sale's stock spread over shards: which shard holds a buyer, each shard's share of
//! the stock, and one hash tag per shard that puts the shards on different cluster nodes.
//!
//! One Redis core serves one slot: a sale on one shard tops out at what one core can reserve.
//! A sale created with `shards: N` keeps N copies of its keys, each under its own hash tag.
//! A buyer belongs to one shard for the whole sale (a hash of the user id), and every request
//! of theirs runs one script on that shard: the per-user limit and request-id idempotency
//! stay exact because all of a buyer's reservations are in one place. Only stock moves
//! between shards (see `lend.lua` and `receive.lua`), so nothing is undersold when buyers
//! crowd one shard.

/// At most this many shards per sale.
pub const MAX_SHARDS: u16 = 16;
/// Redis Cluster's slot count.
const SLOTS: u32 = 16_384;

/// Where one sale's Redis state lives: its id and how many shards hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SaleShards {
    id: i64,
    count: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shards must be between 1 and {MAX_SHARDS}")]
pub struct InvalidShards;

impl SaleShards {
    pub fn new(id: i64, count: i64) -> Result<Self, InvalidShards> {
        match u16::try_from(count) {
            Ok(count) if (1..=MAX_SHARDS).contains(&count) => Ok(Self { id, count }),
            _ => Err(InvalidShards),
        }
    }

    /// A sale on one shard (every sale before sharding).
    pub fn single(id: i64) -> Self {
        Self { id, count: 1 }
    }

    pub fn id(self) -> i64 {
        self.id
    }

    pub fn count(self) -> u16 {
        self.count
    }

    /// The shard that holds this buyer's requests, reservations and limit.
    pub fn shard_of(self, user_id: i64) -> Shard {
        Shard {
            sale: self,
            index: shard_index(user_id, self.count),
        }
    }

    pub fn shard(self, index: u16) -> Shard {
        Shard {
            sale: self,
            index: index % self.count,
        }
    }

    pub fn shards(self) -> impl Iterator<Item = Shard> {
        (0..self.count).map(move |index| Shard { sale: self, index })
    }
}

/// One shard of one sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub sale: SaleShards,
    pub index: u16,
}

impl Shard {
    /// `promo:<id>` for a one-shard sale (the keys every sale had before sharding); for shard
    /// k of N, `promo:<id>:<k>.<salt>` with the smallest salt that puts its slot in the k-th of
    /// N equal slot ranges: a cluster whose nodes hold equal ranges (what `redis-cli --cluster
    /// create` makes) then has the shards on different nodes, as far as N ≤ nodes allows.
    pub fn tag(self) -> String {
        let SaleShards { id, count } = self.sale;
        if count == 1 {
            return format!("promo:{id}");
        }
        let width = SLOTS / u32::from(count);
        let wanted = u32::from(self.index) * width..(u32::from(self.index) + 1) * width;
        (0u32..)
            .map(|salt| format!("promo:{id}:{}.{salt}", self.index))
            .find(|tag| wanted.contains(&u32::from(key_slot(tag.as_bytes()))))
            .expect("some salt lands in every slot range")
    }

    /// This shard's part of a sale's `stock` before any units moved: an even split, the
    /// first shards taking one more each until the remainder is used up.
    pub fn share_of(self, stock: i64) -> i64 {
        let n = i64::from(self.sale.count);
        stock / n + i64::from(i64::from(self.index) < stock % n)
    }
}

/// A buyer's shard: a mixing hash of the user id (SplitMix64's finaliser), so consecutive ids
/// spread evenly.
fn shard_index(user_id: i64, count: u16) -> u16 {
    if count <= 1 {
        return 0;
    }
    let mut z = (user_id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % u64::from(count)) as u16
}

/// Redis Cluster's slot of a key: CRC16 (XMODEM) of its hash tag (the part between the first
/// `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    (crc16(hashed) as u32 % SLOTS) as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), 3443);
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"foo{{bar}}zap"), 4015);
        assert_eq!(key_slot(b"{promo:42}:meta"), 9771);
    }

    #[test]
    fn shares_add_up_to_the_stock() {
        for stock in [0, 1, 2, 7, 100, 1001] {
            for n in 1..=MAX_SHARDS {
                let sale = SaleShards::new(1, i64::from(n)).expect("valid");
                let shares: Vec<i64> = sale.shards().map(|s| s.share_of(stock)).collect();
                assert_eq!(shares.iter().sum::<i64>(), stock, "{stock} over {n}");
                let (max, min) = (
                    shares.iter().max().expect("a share"),
                    shares.iter().min().expect("a share"),
                );
                assert!(max - min <= 1, "{shares:?}");
            }
        }
    }

    #[test]
    fn shard_tags_fall_in_their_own_slot_range() {
        let sale = SaleShards::new(42, 3).expect("valid");
        let slots: Vec<u32> = sale
            .shards()
            .map(|s| u32::from(key_slot(s.tag().as_bytes())))
            .collect();
        for (k, slot) in slots.iter().enumerate() {
            let k = k as u32;
            assert!((k * 5461..(k + 1) * 5461).contains(slot), "{slots:?}");
        }
        assert_eq!(SaleShards::single(42).shard(0).tag(), "promo:42");
    }

    #[test]
    fn buyers_spread_over_every_shard_and_keep_theirs() {
        let sale = SaleShards::new(7, 3).expect("valid");
        let mut per_shard = [0u32; 3];
        for user in 1..=3000 {
            let shard = sale.shard_of(user);
            assert_eq!(shard, sale.shard_of(user));
            per_shard[usize::from(shard.index)] += 1;
        }
        assert!(per_shard.iter().all(|&n| n > 800), "{per_shard:?}");
        assert_eq!(SaleShards::single(7).shard_of(12345).index, 0);
    }

    #[test]
    fn shard_counts_outside_the_bounds_are_refused() {
        assert_eq!(SaleShards::new(1, 0), Err(InvalidShards));
        assert_eq!(SaleShards::new(1, 17), Err(InvalidShards));
        assert!(SaleShards::new(1, 16).is_ok());
    }
}
