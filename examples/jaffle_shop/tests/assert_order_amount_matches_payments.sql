-- Every order's amount equals the sum of its payments.
-- With --vars '{fail_test: true}' the expected total is off by one, so every paid order is returned
-- and the test fails.
with payments as (
    select order_id, sum(amount) as paid
    from {{ ref('stg_payments') }}
    group by order_id
)

select
    orders.order_id,
    orders.amount,
    payments.paid
from {{ ref('orders') }} as orders
inner join payments
    on orders.order_id = payments.order_id
where orders.amount <> payments.paid {% if var('fail_test') %}+ 1{% endif %}
