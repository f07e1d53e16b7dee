//! A tenant's rules never vanish for its principals, and a tenant is only its own name.
