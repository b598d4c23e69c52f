{{ config(cluster_by=(['user_id'] if target.type == 'bigquery' else none)) }}

-- The user's click history as the NAML user encoder reads it: the latest
-- `click_history_size` (default 50) distinct articles the user viewed, newest first.
-- Only articles that still exist (current_articles) are kept, since the encoder needs their text.

with

view_events as (

    select * from {{ ref('view_events') }}

),

articles as (

    select article_id from {{ ref('current_articles') }}

),

clicked_articles as (

    select
        view_events.user_id,
        view_events.article_id,
        min(view_events.viewed_at) as first_viewed_at,
        max(view_events.viewed_at) as last_viewed_at,
        count(*) as views

    from view_events
    inner join articles
        on view_events.article_id = articles.article_id
    group by view_events.user_id, view_events.article_id

),

ranked as (

    select
        *,
        row_number() over (
            partition by user_id
            order by last_viewed_at desc, article_id
        ) as click_rank

    from clicked_articles

),

final as (

    select
        user_id,
        click_rank,
        article_id,
        last_viewed_at,
        first_viewed_at,
        views

    from ranked
    where click_rank <= {{ var('click_history_size') }}

)

select * from final
