-- The CMS as it stands: the latest version of every article that has not been deleted.

with

latest_versions as (

    select * from {{ ref('int_article_versions') }}
    where is_latest_version
        and not is_deleted

),

final as (

    select
        article_id,
        title,
        body,
        category,
        subcategory,
        url,
        status,
        status = 'published' as is_live,
        published_at,
        updated_at,
        -- md5 hex of 'title|body|category|subcategory': the text views the news encoder reads,
        -- so a changed hash means the article must be embedded again.
        {{ dbt.hash(dbt.concat([
            "coalesce(title, '')", "'|'",
            "coalesce(body, '')", "'|'",
            "coalesce(category, '')", "'|'",
            "coalesce(subcategory, '')",
        ])) }} as content_hash,
        version_number,
        valid_from as last_changed_at

    from latest_versions

)

select * from final
