//! The REST gateway (`/api/v2`). It arrives with issue #4: until then no HTTP endpoint is
//! served, and `ranged start --http-addr` is accepted but not bound (the README says so).
