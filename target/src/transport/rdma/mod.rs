//! The RDMA transport (filled in below).
