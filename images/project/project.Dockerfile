# The image of a user's own dbt project, on top of kubedbt/dbt: built by `make project-image`
# (images/project/build.py), which stages the project, without target/, logs/ and (unless told to
# keep them) its packages directory, as the build context's project/ and passes the arguments.
# Not named Dockerfile: tests/cluster/images.sh builds every images/*/Dockerfile from the
# repository root, and this one needs a project as its context.
#
#   PROJECT_NAME    the project's name: it lands at /usr/app/$PROJECT_NAME
#   PROFILES_DIR    where profiles.yml is in the image (DBT_PROFILES_DIR)
#   PACKAGES        deps: run `dbt deps` here; keep: use the packages in the context; none
#   PACKAGES_DIR    the project's packages-install-path (default dbt_packages)

ARG BASE_IMAGE=kubedbt/dbt:dev

FROM ${BASE_IMAGE} AS project
ARG PROJECT_NAME
ARG PACKAGES=none
ARG PACKAGES_DIR=dbt_packages
USER root
COPY project/ /usr/app/${PROJECT_NAME}/
# The base image's DBT_PROJECT_DIR names its example project; dbt deps must see this one.
ENV DBT_PROJECT_DIR=/usr/app/${PROJECT_NAME}
WORKDIR /usr/app/${PROJECT_NAME}
# dbt deps runs with the base image's dbt, so it picks package versions that suit the dbt that
# will run them. It installs `local:` packages as symlinks to their source; they become copies,
# so the image holds what the run reads whatever else moves. Nothing dbt wrote beside the
# project (logs/, target/) is kept, and everything ends root-owned and world-readable: the pod
# runs as uid 1000 and must find the project read-only.
RUN set -eu; \
    if [ "$PACKAGES" = deps ]; then \
      dbt deps; \
      for package in "$PACKAGES_DIR"/*; do \
        if [ -L "$package" ]; then \
          source=$(readlink -f "$package"); rm "$package"; cp -R "$source" "$package"; \
        fi; \
      done; \
    fi; \
    rm -rf target logs; \
    chown -R root:root . && chmod -R u=rwX,go=rX .


FROM ${BASE_IMAGE}
ARG PROJECT_NAME
ARG PROFILES_DIR
USER root
# A project named like the base image's example (jaffle_shop) replaces it instead of merging.
RUN rm -rf "/usr/app/${PROJECT_NAME}"
COPY --from=project /usr/app/${PROJECT_NAME} /usr/app/${PROJECT_NAME}
ENV DBT_PROJECT_DIR=/usr/app/${PROJECT_NAME} \
    DBT_PROFILES_DIR=${PROFILES_DIR}
WORKDIR /usr/app/${PROJECT_NAME}
USER 1000
