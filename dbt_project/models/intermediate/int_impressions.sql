-- One row per article shown in a served list, from the app's `impressions` rows and the API's
-- `served_lists`, with whether the user clicked it: a view event that came from that list
-- (impression_id) for that article.

with

app_changes as (

    select
        impression_id,
        position,
        user_id,
        article_id,
        shown_at,
        variant,
        is_deleted,
        change_seq

    from {{ ref('stg_newsapp__impressions') }}
    where change_type in ('INSERT', 'UPDATE-INSERT', 'DELETE')

),

served_lists as (

    select * from {{ ref('stg_newsapp__served_lists') }}
    where change_type in ('INSERT', 'UPDATE-INSERT', 'DELETE')

),

api_changes as (

    -- The API logs one row per served list (article ids space-separated, best first): one row
    -- per article here, at its position in the whole list.
    select
        served_lists.impression_id,
        served_lists.first_position + integers.n - 1 as position,
        served_lists.user_id,
        {{ list_item('served_lists.article_ids', 'integers.n') }} as article_id,
        served_lists.shown_at,
        served_lists.variant,
        served_lists.is_deleted,
        served_lists.change_seq

    from served_lists
    inner join {{ generate_integers(var('max_served_list_length')) }}
        on integers.n <= {{ list_length('served_lists.article_ids') }}

),

changes as (

    select * from app_changes
    union all
    select * from api_changes

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
