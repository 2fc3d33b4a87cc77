{%- if var('memory_hog') %}
{{ config(pre_hook="set memory_limit = '1TB'") }}
{%- endif %}
{%- if var('warehouse_sleep_seconds') | int > 0 %}
{{ config(pre_hook=warehouse_sleep_sql()) }}
{%- endif %}
{{ sleep_if_requested() }}

with customers as (
    select * from {{ ref('stg_customers') }}
),

orders as (
    select * from {{ ref('stg_orders') }}
),

payments as (
    select * from {{ ref('stg_payments') }}
),

customer_orders as (
    select
        customer_id,
        min(order_date) as first_order,
        max(order_date) as most_recent_order,
        count(order_id) as number_of_orders
    from orders
    group by customer_id
),

customer_payments as (
    select
        orders.customer_id,
        sum(payments.amount) as total_amount
    from payments
    inner join orders
        on payments.order_id = orders.order_id
    group by orders.customer_id
)

select
    customers.customer_id,
    customers.first_name,
    customers.last_name,
    customer_orders.first_order,
    customer_orders.most_recent_order,
    coalesce(customer_orders.number_of_orders, 0) as number_of_orders,
    coalesce(customer_payments.total_amount, 0) + {{ memory_hog_sql() }} * 0 as customer_lifetime_value
from customers
left join customer_orders
    on customers.customer_id = customer_orders.customer_id
left join customer_payments
    on customers.customer_id = customer_payments.customer_id
