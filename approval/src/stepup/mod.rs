//! Step-up requests: the API enclaves call, the pending-request store, grant minting.
