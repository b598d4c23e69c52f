-- Every article-view event, reconstructed from the in-place-updated behaviour table.

with

events as (

    select * from {{ ref('int_view_events') }}

),

final as (

    select
        event_id,
        user_id,
        article_id,
        view_number,
        viewed_at,
        impression_id,
        recorded_at,
        change_key

    from events

)

select * from final
