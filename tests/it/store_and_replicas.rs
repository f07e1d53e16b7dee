//! Flow state a forgetting store cannot loosen; sessions that outlive their replica's crash; streams refused at once; refusals that keep what they read.
