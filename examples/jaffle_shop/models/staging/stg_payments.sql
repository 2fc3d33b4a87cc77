select
    id as payment_id,
    order_id,
    payment_method,
    -- amounts are stored in cents
    cast(amount as numeric(12, 2)) / 100 as amount
from {{ ref('raw_payments') }}
