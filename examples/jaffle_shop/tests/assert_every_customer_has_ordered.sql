-- Customers who never placed an order. Off unless --vars '{warn_test: true}': then it is a test
-- of severity warn that returns rows, so the run succeeds with one node in status `warn`.
-- Disabled, it is no node at all, and the other runs keep their node counts.
{{ config(severity='warn', enabled=var('warn_test')) }}

select customers.customer_id
from {{ ref('customers') }} as customers
left join {{ ref('orders') }} as orders
    on customers.customer_id = orders.customer_id
where orders.order_id is null
