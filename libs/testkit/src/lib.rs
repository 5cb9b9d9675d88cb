//! eddy-testkit
