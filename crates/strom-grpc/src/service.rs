//! `strom.v1.Strom`: each method authenticates its caller, translates and calls the core.

use std::time::Instant;

use tonic::{Request, Response, Status, Streaming};

use crate::pb::{self, strom_server::Strom};
use crate::{admin, produce, queue, subscribe, Caller, Door, Out, OutStream};

impl Door {
    /// After a unary call: its handling time in the request histogram, charged to the caller's
    /// request_percentage quota (a throttled caller's answer waits out the throttle).
    async fn done(&self, caller: &Caller, method: &'static str, started: Instant) {
        crate::observe(self, method, started);
        let us = started.elapsed().as_micros() as usize;
        caller
            .quota_charge(self, strom_broker::quota::QuotaKind::RequestTime, us.max(1))
            .await;
    }
}

#[tonic::async_trait]
impl Strom for Door {
    async fn produce(
        &self,
        req: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let r = produce::produce(self, &caller, req.into_inner()).await;
        self.done(&caller, "Produce", started).await;
        r.map(Response::new)
    }

    type ProduceStreamStream = OutStream<pb::ProduceResponse>;

    async fn produce_stream(
        &self,
        req: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let caller = self.caller(&req).await?;
        let deadline = crate::deadline(req.metadata());
        let (out, stream) = Out::new(self);
        let work = produce::produce_stream(self.clone(), caller, req.into_inner(), out.clone());
        tokio::spawn(crate::until_deadline(deadline, out, work));
        Ok(Response::new(stream))
    }

    type SubscribeStream = OutStream<pb::Record>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.caller(&req).await?;
        let deadline = crate::deadline(req.metadata());
        let req = req.into_inner();
        let plan = subscribe::prepare(self, &caller, &req)?;
        let (out, stream) = Out::new(self);
        tokio::spawn(subscribe::run(
            self.clone(),
            caller,
            plan,
            req.isolation,
            deadline,
            out,
        ));
        Ok(Response::new(stream))
    }

    type QueueStream = OutStream<pb::QueueMessage>;

    async fn queue(
        &self,
        req: Request<Streaming<pb::QueueRequest>>,
    ) -> Result<Response<Self::QueueStream>, Status> {
        let caller = self.caller(&req).await?;
        let deadline = crate::deadline(req.metadata());
        let (out, stream) = Out::new(self);
        tokio::spawn(queue::run(
            self.clone(),
            caller,
            req.into_inner(),
            deadline,
            out,
        ));
        Ok(Response::new(stream))
    }

    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let r = admin::create_topic(self, &caller, req.into_inner()).await;
        self.done(&caller, "CreateTopic", started).await;
        r.map(Response::new)
    }

    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let r = admin::delete_topic(self, &caller, &req.into_inner().name).await;
        self.done(&caller, "DeleteTopic", started).await;
        r.map(|()| Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        req: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let r = admin::list_topics(self, &caller);
        self.done(&caller, "ListTopics", started).await;
        Ok(Response::new(r))
    }

    async fn describe_topic(
        &self,
        req: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::TopicInfo>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let name = req.into_inner().name;
        caller.allow(
            self,
            strom_broker::security::acl::Operation::Describe,
            strom_broker::security::acl::ResourceType::Topic,
            &name,
        )?;
        let r = admin::describe(self, &name);
        self.done(&caller, "DescribeTopic", started).await;
        r.map(Response::new)
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let r = admin::list_groups(self, &caller);
        self.done(&caller, "ListGroups", started).await;
        Ok(Response::new(r))
    }

    async fn describe_group(
        &self,
        req: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::GroupInfo>, Status> {
        let started = Instant::now();
        let caller = self.caller(&req).await?;
        let r = admin::describe_group(self, &caller, &req.into_inner().group);
        self.done(&caller, "DescribeGroup", started).await;
        r.map(Response::new)
    }
}
