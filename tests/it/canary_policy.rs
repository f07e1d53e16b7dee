//! A canary no reporter can steer; a policy that cannot run is never signed.
