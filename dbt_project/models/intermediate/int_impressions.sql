-- One row per article shown in a served list, with whether the user clicked it: a view event
-- that came from that list (impression_id) for that article.

with

changes as (

    select * from {{ ref('stg_newsapp__impressions') }}
    where change_type in ('INSERT', 'UPDATE-INSERT', 'DELETE')

),

latest_changes as (

    -- The exposure log is insert-only; should a row ever change, its latest state counts.
    select
        *,
        row_number() over (
            partition by impression_id, position
            order by change_seq desc
        ) as reverse_version_number

    from changes

),

shown_articles as (

    select
        impression_id,
        position,
        user_id,
        article_id,
        shown_at,
        variant

    from latest_changes
    where reverse_version_number = 1
        and not is_deleted

),

clicks as (

    select
        impression_id,
        article_id,
        min(viewed_at) as first_clicked_at,
        count(*) as click_views

    from {{ ref('int_view_events') }}
    where impression_id is not null
    group by impression_id, article_id

),

final as (

    select
        shown_articles.impression_id,
        shown_articles.position,
        shown_articles.user_id,
        shown_articles.article_id,
        shown_articles.shown_at,
        shown_articles.variant,
        clicks.impression_id is not null as clicked,
        clicks.first_clicked_at,
        coalesce(clicks.click_views, 0) as click_views

    from shown_articles
    left join clicks
        on shown_articles.impression_id = clicks.impression_id
        and shown_articles.article_id = clicks.article_id

)

select * from final
