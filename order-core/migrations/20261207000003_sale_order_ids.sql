-- The ids a sale's orders can carry: minted while it could take orders, from its creation to
-- its end or its last edit, whichever is later, with a day of slack either side for the
-- minting gateways' clocks. One definition for every query that reads a sale's orders, so
-- they read only the partitions of that range. NULLs for an unknown sale (no orders).
CREATE FUNCTION sale_order_ids(sale BIGINT, OUT first_id BIGINT, OUT end_id BIGINT)
LANGUAGE sql STABLE
AS $$
    SELECT order_id_floor(created_at - INTERVAL '1 day'),
           order_id_floor(GREATEST(ends_at, updated_at) + INTERVAL '1 day')
    FROM promotions WHERE id = sale
$$;
