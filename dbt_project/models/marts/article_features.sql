-- Features of every current article at as_of (the latest event time in the data, so a
-- rebuild on the same data is identical): views in the last hour / day / ever, exposures and
-- clicked exposures in the last day, a smoothed CTR, age, and a popularity score.

with

articles as (

    select * from {{ ref('current_articles') }}

),

windows as (

    select
        as_of,
        {{ hours_before('as_of', 1) }} as window_1h_start,
        {{ hours_before('as_of', 24) }} as window_24h_start

    from {{ ref('int_as_of') }}

),

view_counts as (

    select
        view_events.article_id,
        sum(case when view_events.viewed_at >= windows.window_1h_start then 1 else 0 end) as views_1h,
        sum(case when view_events.viewed_at >= windows.window_24h_start then 1 else 0 end) as views_24h,
        count(*) as views_total,
        max(view_events.viewed_at) as last_viewed_at

    from {{ ref('view_events') }} as view_events
    cross join windows
    group by view_events.article_id

),

impression_counts as (

    select
        impressions.article_id,
        sum(case when impressions.shown_at >= windows.window_24h_start then 1 else 0 end) as impressions_24h,
        sum(
            case when impressions.shown_at >= windows.window_24h_start and impressions.clicked then 1 else 0 end
        ) as clicks_24h,
        count(*) as impressions_total,
        sum(case when impressions.clicked then 1 else 0 end) as clicks_total

    from {{ ref('int_impressions') }} as impressions
    cross join windows
    group by impressions.article_id

),

joined as (

    select
        articles.article_id,
        articles.is_live,
        articles.published_at,
        windows.as_of,
        coalesce(view_counts.views_1h, 0) as views_1h,
        coalesce(view_counts.views_24h, 0) as views_24h,
        coalesce(view_counts.views_total, 0) as views_total,
        view_counts.last_viewed_at,
        coalesce(impression_counts.impressions_24h, 0) as impressions_24h,
        coalesce(impression_counts.clicks_24h, 0) as clicks_24h,
        coalesce(impression_counts.impressions_total, 0) as impressions_total,
        coalesce(impression_counts.clicks_total, 0) as clicks_total,
        {{ hours_between('articles.published_at', 'windows.as_of') }} as hours_since_published

    from articles
    cross join windows
    left join view_counts
        on articles.article_id = view_counts.article_id
    left join impression_counts
        on articles.article_id = impression_counts.article_id

),

smoothed as (

    select
        *,
        -- clicked exposures over exposures in the last day, pulled towards the prior CTR
        (clicks_24h + {{ var('ctr_prior') }} * {{ var('ctr_prior_impressions') }})
            / cast(impressions_24h + {{ var('ctr_prior_impressions') }} as {{ dbt.type_float() }}) as ctr_24h,
        case when hours_since_published > 0 then hours_since_published else 0 end as age_hours

    from joined

),

final as (

    select
        article_id,
        as_of,
        views_1h,
        views_24h,
        views_total,
        last_viewed_at,
        impressions_24h,
        clicks_24h,
        impressions_total,
        clicks_total,
        ctr_24h,
        age_hours,
        -- gravity-decayed engagement (Hacker News style); the + 1 lets a fresh article without
        -- views rank by recency. Articles that are not live score 0.
        case
            when is_live then
                (1 + views_24h + {{ var('popularity_1h_weight') }} * views_1h) * ctr_24h
                / power(age_hours + 2, {{ var('popularity_gravity') }})
            else 0
        end as popularity

    from smoothed

)

select * from final
