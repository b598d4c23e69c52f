{{ config(meta={"dagster": {"ref": {"name": "view_events"}}}) }}

-- No view may be lost or invented: for every user x article row, the events are numbered
-- 1..n without gaps, where n is the highest view_count any version of the row recorded.

with

recorded as (

    select
        user_id,
        article_id,
        max(view_count) as highest_view_count

    from {{ ref('stg_newsapp__user_article_views') }}
    where change_type in ('INSERT', 'UPDATE-INSERT')
    group by user_id, article_id

),

reconstructed as (

    select
        user_id,
        article_id,
        count(*) as events,
        count(distinct view_number) as view_numbers,
        min(view_number) as lowest_view_number,
        max(view_number) as highest_view_number

    from {{ ref('view_events') }}
    group by user_id, article_id

)

select
    coalesce(recorded.user_id, reconstructed.user_id) as user_id,
    coalesce(recorded.article_id, reconstructed.article_id) as article_id,
    recorded.highest_view_count,
    reconstructed.events,
    reconstructed.view_numbers,
    reconstructed.lowest_view_number,
    reconstructed.highest_view_number

from recorded
full outer join reconstructed
    on recorded.user_id = reconstructed.user_id
    and recorded.article_id = reconstructed.article_id
where recorded.user_id is null
    or reconstructed.user_id is null
    or reconstructed.events != recorded.highest_view_count
    or reconstructed.view_numbers != recorded.highest_view_count
    or reconstructed.lowest_view_number != 1
    or reconstructed.highest_view_number != recorded.highest_view_count
