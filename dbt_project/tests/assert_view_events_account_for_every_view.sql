{{ config(meta={"dagster": {"ref": {"name": "view_events"}}}) }}

-- No view may be lost or invented: for every user x article row, the events are numbered 1..n
-- without gaps or repeats, where n adds up the highest view_count of each of the row's lives (a
-- DELETE ends a life; the re-inserted row counts again from its own view_count). A row with a
-- rejected jump (int_rejected_view_jumps) is only held to no repeats, with n as the upper bound.
-- Views posted to the API (`api|` keys) are no versions of the row and are held to nothing here.

with

lives as (

    select
        user_id,
        article_id,
        row_life,
        max(view_count) as highest_view_count,
        max(case when version_status = 'rejected_jump' then 1 else 0 end) as has_rejected_jump

    from {{ ref('int_view_row_versions') }}
    group by user_id, article_id, row_life

),

recorded as (

    select
        user_id,
        article_id,
        sum(highest_view_count) as expected_views,
        max(has_rejected_jump) as has_rejected_jump

    from lives
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
    where event_id not like 'api|%'
    group by user_id, article_id

)

select
    coalesce(recorded.user_id, reconstructed.user_id) as user_id,
    coalesce(recorded.article_id, reconstructed.article_id) as article_id,
    recorded.expected_views,
    recorded.has_rejected_jump,
    reconstructed.events,
    reconstructed.view_numbers,
    reconstructed.lowest_view_number,
    reconstructed.highest_view_number

from recorded
full outer join reconstructed
    on recorded.user_id = reconstructed.user_id
    and recorded.article_id = reconstructed.article_id
where recorded.user_id is null
    or reconstructed.events != reconstructed.view_numbers
    or reconstructed.lowest_view_number < 1
    or reconstructed.highest_view_number > recorded.expected_views
    or (
        recorded.has_rejected_jump = 0
        and (
            coalesce(reconstructed.events, 0) != recorded.expected_views
            or coalesce(reconstructed.highest_view_number, 0) != recorded.expected_views
        )
    )
