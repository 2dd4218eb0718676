"""Orders and fills in exact Decimal, the ExecutionVenue port every venue implements, and the paper exchange."""
