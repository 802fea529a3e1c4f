//! The Redis topology as this process sees it (filled in below).
